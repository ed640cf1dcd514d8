"""Raw OTLP forwarding: serialized export requests, as they are, to the configured exporter.

The opentelemetry-exporter-otlp exporters take SDK ReadableSpans; what an SDK sent us is already
an ``Export*ServiceRequest`` (possibly with fields this agent does not know), so it is sent as
bytes: gRPC through a generic unary call on the collector's service path, HTTP/protobuf as a POST.
The [exporter] settings apply unchanged: endpoint, protocol, headers, compression, timeout, TLS.

``submit`` never blocks (receiver threads answer the SDK at once): requests wait in a bounded
queue (count and bytes) for one worker thread; overflow and failed sends are counted.
"""

from __future__ import annotations

import gzip
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from typing import Any, Optional
from urllib.parse import urlparse, urlunparse

from hostagent.config import ExporterConfig

log = logging.getLogger(__name__)

SIGNALS = ("traces", "metrics", "logs")
GRPC_PATHS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


def http_url(endpoint: str, signal: str, signal_specific: bool = False) -> str:
    """``<base>/v1/<signal>`` (OTLP spec); a traces URL given as such is used as is."""
    if signal_specific and signal == "traces":
        return endpoint
    parsed = urlparse(endpoint if "://" in endpoint else "http://" + endpoint)
    path = parsed.path.rstrip("/")
    for other in SIGNALS:
        if path.endswith("/v1/" + other):
            path = path[: -len("/v1/" + other)]
    return urlunparse(parsed._replace(path=f"{path}/v1/{signal}"))


def _read(path: str) -> Optional[bytes]:
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


class RawForwarder:
    def __init__(self, exporter: ExporterConfig, max_queue: int = 1024, max_bytes: int = 64 << 20) -> None:
        self.config = exporter
        self.max_queue, self.max_bytes = max_queue, max_bytes
        self.counters: Counter[str] = Counter()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otlp-forward", daemon=True)
        self._channel: Any = None
        self._calls: dict[str, Any] = {}

    def start(self) -> RawForwarder:
        self._thread.start()
        return self

    def submit(self, signal: str, payload: bytes) -> bool:
        if not self.config.endpoint:
            self.counters["forward_no_exporter"] += 1
            return False
        with self._lock:
            if len(self._queue) >= self.max_queue or self._bytes + len(payload) > self.max_bytes:
                self.counters["forward_queue_full"] += 1
                return False
            self._queue.append((signal, payload))
            self._bytes += len(payload)
        self._wake.set()
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), then close."""
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(0.1, deadline - time.monotonic()))
        if self._channel is not None:
            self._channel.close()
        self.counters["forward_dropped_at_stop"] += len(self._queue)

    # -- worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            while self._queue and not self._stop.is_set():
                with self._lock:
                    signal, payload = self._queue.popleft()
                    self._bytes -= len(payload)
                try:
                    ok = self._send(signal, payload)
                except Exception as exc:  # a transport bug must not end forwarding
                    log.warning("forwarding %s failed: %r", signal, exc)
                    ok = False
                self.counters[f"forwarded_{signal}" if ok else "forward_failed"] += 1

    def _send(self, signal: str, payload: bytes) -> bool:
        if self.config.protocol == "grpc":
            return self._send_grpc(signal, payload)
        return self._send_http(signal, payload)

    def _send_grpc(self, signal: str, payload: bytes) -> bool:
        import grpc

        cfg = self.config
        if self._channel is None:
            endpoint = cfg.endpoint
            parsed = urlparse(endpoint if "://" in endpoint else "//" + endpoint)
            target = parsed.netloc or endpoint
            insecure = cfg.insecure
            if insecure is None:
                insecure = parsed.scheme == "http" or (parsed.scheme == "" and not cfg.certificate)
            compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
            if insecure:
                self._channel = grpc.insecure_channel(target, compression=compression)
            else:
                creds = grpc.ssl_channel_credentials(_read(cfg.certificate), _read(cfg.client_key),
                                                     _read(cfg.client_certificate))
                self._channel = grpc.secure_channel(target, creds, compression=compression)
        call = self._calls.get(signal)
        if call is None:
            call = self._calls[signal] = self._channel.unary_unary(GRPC_PATHS[signal])  # bytes in, bytes out
        for attempt in range(3):
            try:
                call(payload, timeout=cfg.timeout_ms / 1000, metadata=tuple(cfg.headers) or None)
                return True
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or attempt == 2:
                    log.warning("forwarding %s over gRPC failed: %s", signal, code)
                    return False
                if self._stop.wait(0.5 * (attempt + 1)):
                    return False
        return False

    def _send_http(self, signal: str, payload: bytes) -> bool:
        cfg = self.config
        url = http_url(cfg.endpoint, signal, cfg.endpoint_is_signal_specific)
        headers = {"Content-Type": "application/x-protobuf", **dict(cfg.headers)}
        if cfg.compression == "gzip":
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        context = None
        if url.startswith("https"):
            context = ssl.create_default_context(cafile=cfg.certificate or None)
            if cfg.client_certificate:
                context.load_cert_chain(cfg.client_certificate, cfg.client_key or None)
        request = urllib.request.Request(url, data=payload, headers=headers, method="POST")
        for attempt in range(3):
            try:
                with urllib.request.urlopen(request, timeout=cfg.timeout_ms / 1000, context=context) as resp:
                    resp.read()
                    return True
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 502, 503, 504) or attempt == 2:
                    log.warning("forwarding %s over HTTP failed: %s", signal, exc.code)
                    return False
            except OSError as exc:
                if attempt == 2:
                    log.warning("forwarding %s over HTTP failed: %r", signal, exc)
                    return False
            if self._stop.wait(0.5 * (attempt + 1)):
                return False
        return False
