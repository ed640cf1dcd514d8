"""Which calls carry telemetry: exports to OpenTelemetry collectors and tracing backends.

OpenTelemetry SDKs leave their own exporters' calls untraced (the suppress-instrumentation context);
the agent does the same for every process by default (``[capture] telemetry_calls``): on a host
that runs a collector, the spans of its exports would be exported through it in turn, and the
collector's exports of those to a backend would make more (a loop, one turn per export). Only
exact, well-known ingest paths count: an application's own ``POST /api/v1/metrics`` is traced.

``is_telemetry_call`` is a pure function of the call's attributes: gRPC by its fully-qualified
service, HTTP by the well-known ingest paths (POST only). ``TelemetryConnections`` adds what one call
cannot show: an HTTP/2 connection whose HPACK table became partly known (its client's big
concurrent exports go by beyond the captured bytes) drops ``:path`` from every later call, because
the exporter indexed it once; such an unnamed call on a connection that has carried an export is an
export too (acceptance run: another agent's OTLP channel, 406 spans in 4 minutes).
"""

from __future__ import annotations

from typing import Final, Optional

from hostagent.model import Call

ConnectionKey = tuple[int, int, str, int, int]

TELEMETRY_RPC_SERVICES: Final = frozenset({
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
    "opentelemetry.proto.collector.profiles.v1development.ProfilesService",
    "jaeger.api_v2.CollectorService",
})
TELEMETRY_HTTP_PATHS: Final = frozenset({
    "/v1/traces", "/v1/metrics", "/v1/logs", "/v1development/profiles",  # OTLP/HTTP
    "/api/v1/otlp/v1/metrics",  # OTLP into Prometheus
    "/api/v2/spans", "/api/v1/spans",  # Zipkin
    "/api/traces",  # Jaeger's collector over HTTP (Thrift)
    "/api/v1/write",  # Prometheus remote write
    "/loki/api/v1/push",  # Loki
})


def is_telemetry_call(call: Call) -> bool:
    attrs = call.attributes
    method = attrs.get("rpc.method")
    if isinstance(method, str):
        return method.rpartition("/")[0] in TELEMETRY_RPC_SERVICES
    path = attrs.get("url.path")
    if not isinstance(path, str) or attrs.get("http.request.method") != "POST":
        return False
    # a gRPC call seen as plain HTTP/2 (its content-type in HPACK state from before the capture)
    return path in TELEMETRY_HTTP_PATHS or path[1:].rpartition("/")[0] in TELEMETRY_RPC_SERVICES


def _connection_key(call: Call) -> Optional[ConnectionKey]:
    conn = call.conn
    if conn is None or conn.peer is None:
        return None
    local_port = conn.local.port if conn.local is not None else 0
    return (conn.pid, conn.fd, conn.peer.address, conn.peer.port, local_port)


def _unnamed_http2(call: Call) -> bool:
    """An HTTP/2 call whose method and path went unseen (HPACK entries it refers to are unknown)."""
    attrs = call.attributes
    return (call.protocol in ("grpc", "http2") and not isinstance(attrs.get("rpc.method"), str)
            and not isinstance(attrs.get("url.path"), str))


class TelemetryConnections:
    """Connections that carried a telemetry export, so that their later unnamed HTTP/2 calls count
    as exports too. Only calls that show no method or path are judged by their connection: a named
    call is judged by its name alone. Bounded: the oldest connection is forgotten first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._exporting: dict[ConnectionKey, None] = {}  # insertion-ordered: oldest first

    def is_telemetry(self, call: Call) -> bool:
        # Per call of every protocol: the connection's key is built only for an export or for an
        # unnamed HTTP/2 call while some connection has carried one (nearly never).
        if is_telemetry_call(call):
            key = _connection_key(call)
            if key is not None and key not in self._exporting:
                if len(self._exporting) >= self.max_entries:
                    del self._exporting[next(iter(self._exporting))]
                self._exporting[key] = None
            return True
        if not self._exporting or not _unnamed_http2(call):
            return False
        key = _connection_key(call)
        return key is not None and key in self._exporting

    def __len__(self) -> int:
        return len(self._exporting)
