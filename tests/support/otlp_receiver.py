"""A real OTLP receiver for tests: gRPC (the official generated services) and HTTP/protobuf.

Runs in-process on 127.0.0.1 and records every export request twice:
- ``raw``: the exact serialized request bytes as received (after transport decompression), for
  tests that scan every exported byte ("the secret never leaves the host");
- decoded, flat ``ReceivedSpan`` / ``ReceivedPoint`` records that tests assert on exactly.

``stop()`` then ``start()`` re-binds the same port, to simulate a collector that goes down and
comes back. ``fail_with`` makes the gRPC receiver answer every export with that status code
(e.g. UNAVAILABLE) without recording, to test the exporter's retry path.

Fixtures (function scope): ``otlp_receiver`` (gRPC), ``otlp_http_receiver`` (HTTP/protobuf).
"""

from __future__ import annotations

import gzip
import ssl
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

# OTLP's SpanKind enum -> the names the SDK uses.
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value (arrays -> tuples, kvlists -> dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(any_value(item) for item in value.array_value.values)
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, which)


def attributes(pairs: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        result[pair.key] = any_value(pair.value)
    return result


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # "SERVER", "CLIENT", "INTERNAL", ...
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # "" when the span is a root
    start_unix_ns: int
    end_unix_ns: int
    attributes: dict[str, Any]
    status_code: int  # 0 UNSET, 1 OK, 2 ERROR (OTLP's StatusCode)
    status_message: str
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    trace_state: str
    flags: int


@dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point, flattened."""

    name: str
    unit: str
    type: str  # "sum" | "gauge" | "histogram"
    attributes: dict[str, Any]
    value: float  # sum/gauge value; histogram: the sum
    count: int  # histogram count (0 otherwise)
    bucket_counts: tuple[int, ...]
    bounds: tuple[float, ...]
    resource: dict[str, Any]
    scope_name: str


def flatten_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                assert isinstance(span, PbSpan)
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_unix_ns=span.start_time_unix_nano,
                        end_unix_ns=span.end_time_unix_nano,
                        attributes=attributes(span.attributes),
                        status_code=span.status.code,
                        status_message=span.status.message,
                        resource=resource,
                        scope_name=scope_spans.scope.name,
                        scope_version=scope_spans.scope.version,
                        trace_state=span.trace_state,
                        flags=span.flags,
                    )
                )
    return spans


def flatten_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[ReceivedPoint]:
    points = []
    for resource_metrics in request.resource_metrics:
        resource = attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                data = getattr(metric, kind) if kind else None
                for point in getattr(data, "data_points", ()):
                    if kind == "histogram":
                        value, count = point.sum, point.count
                        buckets, bounds = tuple(point.bucket_counts), tuple(point.explicit_bounds)
                    else:
                        which = point.WhichOneof("value")
                        value, count, buckets, bounds = float(getattr(point, which)), 0, (), ()
                    points.append(
                        ReceivedPoint(
                            name=metric.name,
                            unit=metric.unit,
                            type=str(kind),
                            attributes=attributes(point.attributes),
                            value=value,
                            count=count,
                            bucket_counts=buckets,
                            bounds=bounds,
                            resource=resource,
                            scope_name=scope_metrics.scope.name,
                        )
                    )
    return points


class Recorder:
    """What the receivers got; shared by the gRPC and HTTP front ends. Thread safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.raw: list[bytes] = []  # every request body (traces and metrics) as received
        self.headers: list[dict[str, str]] = []  # request metadata/headers, per request
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedPoint] = []
        self.trace_requests = 0
        self.metric_requests = 0

    def record_traces(self, raw: bytes, headers: dict[str, str]) -> None:
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        spans = flatten_spans(request)
        with self._cond:
            self.raw.append(raw)
            self.headers.append(headers)
            self._spans.extend(spans)
            self.trace_requests += 1
            self._cond.notify_all()

    def record_metrics(self, raw: bytes, headers: dict[str, str]) -> None:
        request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(raw)
        points = flatten_metrics(request)
        with self._cond:
            self.raw.append(raw)
            self.headers.append(headers)
            self._points.extend(points)
            self.metric_requests += 1
            self._cond.notify_all()

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    @property
    def points(self) -> list[ReceivedPoint]:
        with self._cond:
            return list(self._points)

    def all_bytes(self) -> bytes:
        with self._cond:
            return b"".join(self.raw)

    def clear(self) -> None:
        with self._cond:
            self.raw.clear()
            self.headers.clear()
            self._spans.clear()
            self._points.clear()
            self.trace_requests = 0
            self.metric_requests = 0

    def wait_for_spans(
        self, want: Union[int, Callable[[list[ReceivedSpan]], bool]] = 1, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """Wait until ``want`` spans (or ``want(spans)`` is true); returns the spans so far.

        Raises TimeoutError with what did arrive, so a failing test says what it saw.
        """

        def done() -> bool:
            return len(self._spans) >= want if isinstance(want, int) else bool(want(self._spans))

        with self._cond:
            if not self._cond.wait_for(done, timeout):
                raise TimeoutError(f"wanted {want!r}, got {len(self._spans)} spans: {self._spans[:5]!r}")
            return list(self._spans)

    def wait_for_points(
        self, want: Callable[[list[ReceivedPoint]], bool], timeout: float = 10.0
    ) -> list[ReceivedPoint]:
        with self._cond:
            if not self._cond.wait_for(lambda: want(self._points), timeout):
                raise TimeoutError(f"metric points not as wanted; got {[p.name for p in self._points]}")
            return list(self._points)


def _metadata(context: grpc.ServicerContext) -> dict[str, str]:
    return {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: bytes, context: grpc.ServicerContext) -> Any:
        if self._receiver.fail_with is not None:
            self._receiver.rejected += 1
            context.abort(self._receiver.fail_with, "receiver told to fail")
        self._receiver.recorder.record_traces(request, _metadata(context))
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpGrpcReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: bytes, context: grpc.ServicerContext) -> Any:
        if self._receiver.fail_with is not None:
            self._receiver.rejected += 1
            context.abort(self._receiver.fail_with, "receiver told to fail")
        self._receiver.recorder.record_metrics(request, _metadata(context))
        return metrics_service_pb2.ExportMetricsServiceResponse()


def _raw_handler(service_name: str, export: Callable[..., Any], response_type: Any) -> grpc.GenericRpcHandler:
    # Same service and method names as the generated add_*Servicer_to_server, but the request is
    # handed over as the raw bytes gRPC received (no request_deserializer) so tests can scan them
    # exactly; the servicer decodes them itself.
    handler = grpc.unary_unary_rpc_method_handler(export, response_serializer=response_type.SerializeToString)
    return grpc.method_handlers_generic_handler(service_name, {"Export": handler})


_TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
_METRICS_SERVICE = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name


class OtlpGrpcReceiver:
    """OTLP/gRPC TraceService + MetricsService on 127.0.0.1:``port`` (0 = a free port)."""

    def __init__(
        self, port: int = 0, recorder: Optional[Recorder] = None, tls: Optional[tuple[str, str]] = None
    ) -> None:
        self.recorder = recorder if recorder is not None else Recorder()
        self.port = port
        self.tls = tls  # (key file, certificate file): serve over TLS
        self.fail_with: Optional[grpc.StatusCode] = None
        self.rejected = 0
        self._server: Optional[grpc.Server] = None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> OtlpGrpcReceiver:
        # so_reuseport off: a second server must not silently share the port with this one.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
        traces = _TraceService(self)
        metrics = _MetricsService(self)
        server.add_generic_rpc_handlers(
            (
                _raw_handler(_TRACE_SERVICE, traces.Export, trace_service_pb2.ExportTraceServiceResponse),
                _raw_handler(_METRICS_SERVICE, metrics.Export, metrics_service_pb2.ExportMetricsServiceResponse),
            )
        )
        address = f"127.0.0.1:{self.port}"
        if self.tls:
            key_file, cert_file = self.tls
            with open(key_file, "rb") as key, open(cert_file, "rb") as cert:
                credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"cannot bind 127.0.0.1:{self.port}")
        self.port = bound
        server.start()
        self._server = server
        return self

    def stop(self, grace: Optional[float] = None) -> None:
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    # Convenience pass-throughs so tests read naturally.
    @property
    def spans(self) -> list[ReceivedSpan]:
        return self.recorder.spans

    def wait_for_spans(self, want: Union[int, Callable[[list[ReceivedSpan]], bool]] = 1, timeout: float = 10.0):
        return self.recorder.wait_for_spans(want, timeout)

    def clear(self) -> None:
        self.recorder.clear()


class _HttpHandler(BaseHTTPRequestHandler):
    server: _RecordingHttpServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        headers = {key.lower(): value for key, value in self.headers.items()}
        recorder = self.server.recorder
        if self.path == "/v1/traces":
            recorder.record_traces(body, headers)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        elif self.path == "/v1/metrics":
            recorder.record_metrics(body, headers)
            reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return None


class _RecordingHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    recorder: Recorder


class OtlpHttpReceiver:
    """OTLP/HTTP (protobuf) on 127.0.0.1:``port``: POST /v1/traces and /v1/metrics."""

    def __init__(
        self, port: int = 0, recorder: Optional[Recorder] = None, tls: Optional[tuple[str, str]] = None
    ) -> None:
        self.recorder = recorder if recorder is not None else Recorder()
        self.port = port
        self.tls = tls  # (key file, certificate file): serve over HTTPS
        self._server: Optional[_RecordingHttpServer] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def endpoint(self) -> str:
        """The base endpoint (the exporter appends /v1/traces)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> OtlpHttpReceiver:
        server = _RecordingHttpServer(("127.0.0.1", self.port), _HttpHandler)
        server.recorder = self.recorder
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=self.tls[1], keyfile=self.tls[0])
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def spans(self) -> list[ReceivedSpan]:
        return self.recorder.spans

    def wait_for_spans(self, want: Union[int, Callable[[list[ReceivedSpan]], bool]] = 1, timeout: float = 10.0):
        return self.recorder.wait_for_spans(want, timeout)

    def clear(self) -> None:
        self.recorder.clear()


def make_self_signed(directory: str) -> tuple[str, str]:
    """A self-signed key and certificate for 127.0.0.1 (openssl), for TLS tests: (key, cert)."""
    key, cert = f"{directory}/receiver.key", f"{directory}/receiver.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll ``condition`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpGrpcReceiver]:
    """A started OTLP/gRPC receiver on a free loopback port; stopped after the test."""
    receiver = OtlpGrpcReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def otlp_http_receiver() -> Iterator[OtlpHttpReceiver]:
    """A started OTLP/HTTP receiver on a free loopback port; stopped after the test."""
    receiver = OtlpHttpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


__all__ = [
    "OtlpGrpcReceiver",
    "OtlpHttpReceiver",
    "ReceivedPoint",
    "ReceivedSpan",
    "Recorder",
    "otlp_http_receiver",
    "otlp_receiver",
    "wait_until",
]
