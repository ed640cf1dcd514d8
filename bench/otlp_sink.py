"""A counting-only OTLP/gRPC trace receiver, run as its own process so it never competes inside
the agent (or the app) for the GIL.

It counts the spans of each ExportTraceServiceRequest (with ``--server-port``, only spans whose
server.port is the benchmark's server: the agent traces every process on the host), and writes the
running total to ``--count-file`` after every export, so the bench driver reads it without any RPC
of its own.

It runs on the load generator's CPU, so what it costs there slows the client, not the app: it must
not decode what it only counts. A full decode and a walk of every span's attributes in Python
(``full_counts``, the method before the twenty-seventh round) cost ~2.8 us per span, a 512-span
batch in one ~1.5 ms run. Now, in C and exact (``count_spans``, ``count_port``; test_bench_sink
compares them with ``full_counts`` on batches of both encoders in the bench):
- all spans: the request parsed with protobuf's C backend into a skinny schema whose spans are
  opaque bytes (nothing inside a span is decoded), their number summed per scope;
- spans of a server port: the span attribute ``server.port = <port>`` counted as bytes in the raw
  request (``port_field``). The first ``VERIFY`` requests holding spans are also counted the old
  way; on any difference the receiver says so on stderr and keeps the full decode from then on.

    python -m bench.otlp_sink --port 18910 --count-file /tmp/x/spans
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
_METRICS = "opentelemetry.proto.collector.metrics.v1.MetricsService"
VERIFY = 2  # requests with spans counted both ways at the start of each run


def _skinny_request() -> Any:
    """ExportTraceServiceRequest with only the path to the spans: resource_spans (1) ->
    scope_spans (2) -> spans (2) as ``repeated bytes`` (a length-delimited field parses as bytes
    or as a message alike; every other field is skipped as unknown)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="bench_otlp_sink_skinny.proto", package="bench_skinny",
                                             syntax="proto3")
    for name, field, number, typ in (("Request", "resource_spans", 1, ".bench_skinny.ResourceSpans"),
                                     ("ResourceSpans", "scope_spans", 2, ".bench_skinny.ScopeSpans"),
                                     ("ScopeSpans", "spans", 2, "")):
        f = fdp.message_type.add(name=name).field.add(name=field, number=number,
                                                      label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED)
        if typ:
            f.type, f.type_name = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, typ
        else:
            f.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("bench_skinny.Request"))


_SkinnyRequest = _skinny_request()


def count_spans(raw: bytes) -> int:
    """The number of spans in an encoded ExportTraceServiceRequest, none of them decoded."""
    req = _SkinnyRequest.FromString(raw)
    return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)


def _varint(n: int) -> bytes:
    """A protobuf varint (n >= 0). Not the agent's encoder's: the receiver checks what that encoder
    wrote, so it does not share its code."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def port_field(port: int) -> bytes:
    """A Span's ``attributes`` field (9, LEN: tag 0x4A) holding the KeyValue key "server.port"
    (1: 0x0A), value (2: 0x12) AnyValue int_value (3, varint: 0x18) ``port``, as any canonical
    encoder writes it (fields in number order, shortest varints: protobuf's serialisers, the
    agent's hand encoder). Only a span attribute has tag 0x4A: resource, scope, event and link
    attributes and kvlist entries are other fields (0x0A, 0x1A, 0x22), so the same pair there does
    not match; the two lengths inside bound the KeyValue to exactly these bytes, so a longer
    value or another key does not either."""
    if not 0 < port < 1 << 63:
        raise ValueError(f"server port {port} out of range")
    value = b"\x18" + _varint(port)
    kv = b"\x0a\x0bserver.port\x12" + bytes((len(value),)) + value
    return b"\x4a" + bytes((len(kv),)) + kv


def count_port(raw: bytes, field: bytes) -> int:
    """Spans with the attribute ``field`` (``port_field``): one per span, as attribute keys are
    unique in a span (the SDK's and the agent's attributes are dicts)."""
    return raw.count(field)


def full_counts(raw: bytes, server_port: int) -> tuple[int, int]:
    """(all spans, spans whose first server.port attribute is the int ``server_port``) by a full
    decode and a walk of every span's attributes: the reference, and the fallback."""
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
    total = ours = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                total += 1
                for kv in sp.attributes:
                    if kv.key == "server.port":
                        ours += kv.value.int_value == server_port  # a value of another type reads 0
                        break
    return total, ours


class Counter:
    def __init__(self, path: Path, server_port: int = 0) -> None:
        self.path = path
        self.server_port = server_port
        self._field = port_field(server_port) if server_port else b""
        self.spans = 0
        self.requests = 0
        self.fast = True  # False after a difference with the full decode: full decode from then on
        self._verify = VERIFY
        self._lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.spans} {self.requests}\n")
        os.replace(tmp, self.path)

    def count(self, raw: bytes) -> int:
        if not self.fast:
            total, ours = full_counts(raw, self.server_port)
            return ours if self.server_port else total
        n = count_port(raw, self._field) if self.server_port else count_spans(raw)
        if self._verify > 0:
            total, ours = full_counts(raw, self.server_port)
            ref = ours if self.server_port else total
            with self._lock:
                self._verify -= total > 0
                if ref != n:
                    self.fast = False
                    print(f"otlp_sink: counted {n} spans, the full decode {ref} (server port {self.server_port});"
                          " full decode from now on", file=sys.stderr, flush=True)
            return ref
        return n

    def export(self, raw: bytes, _context: Any) -> bytes:
        n = self.count(raw)
        with self._lock:
            self.spans += n
            self.requests += 1
            self._write()
        return b""  # an empty ExportTraceServiceResponse


def _ok(_raw: bytes, _context: Any) -> bytes:
    return b""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count-file", type=Path, required=True)
    ap.add_argument("--server-port", type=int, default=0, help="count only spans with this server.port")
    args = ap.parse_args()
    counter = Counter(args.count_file, args.server_port)
    ident = lambda b: b  # noqa: E731 - raw bytes in and out: no (de)serialiser work in gRPC
    handlers = (
        grpc.method_handlers_generic_handler(_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(
            counter.export, request_deserializer=ident, response_serializer=ident)}),
        grpc.method_handlers_generic_handler(_METRICS, {"Export": grpc.unary_unary_rpc_method_handler(
            _ok, request_deserializer=ident, response_serializer=ident)}),
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)],
                         handlers=handlers)
    if server.add_insecure_port(f"127.0.0.1:{args.port}") == 0:
        raise SystemExit(f"cannot bind 127.0.0.1:{args.port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
