"""Which calls carry telemetry: exports to OpenTelemetry collectors and tracing backends.

OpenTelemetry SDKs leave their own exporters' calls untraced (the suppress-instrumentation context);
the agent does the same for every process by default (``[capture] telemetry_calls``): on a host
that runs a collector, the spans of its exports would be exported through it in turn, and the
collector's exports of those to a backend would make more (a loop, one turn per export). Only
exact, well-known ingest paths count: an application's own ``POST /api/v1/metrics`` is traced.

A pure function of the call's attributes: gRPC by its fully-qualified service, HTTP by the
well-known ingest paths (POST only).
"""

from __future__ import annotations

from hostagent.model import Call

TELEMETRY_RPC_SERVICES = frozenset({
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
    "opentelemetry.proto.collector.profiles.v1development.ProfilesService",
    "jaeger.api_v2.CollectorService",
})
TELEMETRY_HTTP_PATHS = frozenset({
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
