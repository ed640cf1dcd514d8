"""The agent's own OTLP receiver for local SDKs: gRPC and HTTP/protobuf, per [receiver].

An SDK pointed here (OTEL_EXPORTER_OTLP_ENDPOINT) gets its answer as soon as the request is
decoded: traces go to the SDK layer (hostagent.traces.enrich), which may hold them a little
before forwarding, metrics and logs are forwarded as they are. A request that does not decode
gets INVALID_ARGUMENT (gRPC) or 400 (HTTP) and nothing else happens: a fuzzed or truncated body
can cost one error answer, never the agent. JSON (application/json) is refused with 415.
"""

from __future__ import annotations

import gzip
import logging
import threading
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

log = logging.getLogger(__name__)

MAX_BODY = 32 << 20  # bytes; larger requests get 413 / RESOURCE_EXHAUSTED
_TYPES: dict[str, Any] = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest,
                          "logs": ExportLogsServiceRequest}
_GRPC_SERVICES = {"traces": "opentelemetry.proto.collector.trace.v1.TraceService",
                  "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
                  "logs": "opentelemetry.proto.collector.logs.v1.LogsService"}

OnTraces = Callable[[ExportTraceServiceRequest, int], None]
OnRaw = Callable[[str, bytes], Any]


class Intake:
    """Decode, count, dispatch: shared by both front ends."""

    def __init__(self, on_traces: OnTraces, on_raw: OnRaw) -> None:
        self.on_traces, self.on_raw = on_traces, on_raw
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def take(self, signal: str, payload: bytes) -> Optional[str]:
        """None when accepted, else why not (the front end turns it into an error status)."""
        try:
            message = _TYPES[signal].FromString(payload)
        except (DecodeError, ValueError, RuntimeError) as exc:  # RuntimeError: recursion limit
            self.count("receiver_malformed")
            return f"not a valid OTLP {signal} request: {type(exc).__name__}"
        self.count(f"received_{signal}")
        try:
            if signal == "traces":
                self.on_traces(message, len(payload))
            else:
                self.on_raw(signal, payload)
        except Exception:  # a bug downstream must not turn into an SDK retry storm
            self.count("receiver_errors")
            log.exception("receiver: handling %s failed", signal)
        return None


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class GrpcReceiver:
    def __init__(self, address: str, intake: Intake, workers: int = 4) -> None:
        import grpc

        self.address, self.intake = address, intake
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-recv"),
                                   options=[("grpc.so_reuseport", 0),
                                            ("grpc.max_receive_message_length", MAX_BODY)])
        handlers = []
        for signal, service in _GRPC_SERVICES.items():
            method = grpc.unary_unary_rpc_method_handler(self._handler(signal))  # raw bytes in and out
            handlers.append(grpc.method_handlers_generic_handler(service, {"Export": method}))
        self._server.add_generic_rpc_handlers(handlers)
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"receiver: cannot listen on {address} (gRPC)")

    def _handler(self, signal: str) -> Callable[[bytes, Any], bytes]:
        import grpc

        def export(request: bytes, context: Any) -> bytes:
            error = self.intake.take(signal, request)
            if error is not None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error)
            return b""  # an empty Export*ServiceResponse: everything accepted

        return export

    def start(self) -> GrpcReceiver:
        self._server.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._server.stop(grace).wait(grace + 1)


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        intake = self.server.intake
        signal = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}.get(self.path)
        if signal is None:
            self._answer(404, b"unknown path")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, b"Content-Length required")
            return
        if length < 0 or length > MAX_BODY:
            self._answer(413, b"request too large")
            self.close_connection = True
            return
        body = self.rfile.read(length)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-protobuf":
            intake.count("receiver_unsupported")
            self._answer(415, b"only application/x-protobuf is accepted")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
        except (OSError, EOFError, zlib.error):
            intake.count("receiver_malformed")
            self._answer(400, b"bad compressed body")
            return
        error = intake.take(signal, body)
        if error is not None:
            self._answer(400, error.encode())
            return
        self._answer(200, b"", "application/x-protobuf")

    def _answer(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    intake: Intake


class HttpReceiver:
    def __init__(self, address: str, intake: Intake) -> None:
        host, port = _host_port(address)
        self._server = _HttpServer((host, port), _Handler)
        self._server.intake = intake
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="otlp-recv-http", daemon=True)

    def start(self) -> HttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2)
