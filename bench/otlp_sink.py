"""A counting-only OTLP/gRPC trace receiver, run as its own process so it never competes inside
the agent (or the app) for the GIL.

It decodes each ExportTraceServiceRequest (protobuf's C backend: microseconds per batch) only to
count spans (with ``--server-port``, only spans whose server.port is the benchmark's server: the
agent traces every process on the host), and writes the running total to ``--count-file`` after
every export, so the bench driver reads it without any RPC of its own.

    python -m bench.otlp_sink --port 18910 --count-file /tmp/x/spans
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
_METRICS = "opentelemetry.proto.collector.metrics.v1.MetricsService"


class Counter:
    def __init__(self, path: Path, server_port: int = 0) -> None:
        self.path = path
        self.server_port = server_port
        self.spans = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(f"{self.spans} {self.requests}\n")
        os.replace(tmp, self.path)

    def export(self, raw: bytes, _context: Any) -> bytes:
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        if self.server_port:  # only the benchmark's own calls (other processes on the host are traced too)
            n = sum(1 for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans
                    if self._ours(sp))
        else:
            n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.spans += n
            self.requests += 1
            self._write()
        return b""  # an empty ExportTraceServiceResponse


    def _ours(self, span: Any) -> bool:
        for kv in span.attributes:
            if kv.key == "server.port":
                return bool(kv.value.int_value == self.server_port)
        return False


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
