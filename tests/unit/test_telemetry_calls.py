"""Which calls carry telemetry (hostagent.policy.telemetry), and the pipeline leaving them out by
default ([capture] telemetry_calls)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline
from hostagent.policy.telemetry import TelemetryConnections, is_telemetry_call
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.pipeline_parts import Exported, NoTracker


def call(protocol: str, **attrs: Any) -> Call:
    return Call(protocol=protocol, role=Role.CLIENT, start_ns=1_000, end_ns=2_000, name="x", attributes=attrs,
                conn=Connection(pid=300, tid=300, fd=7, peer=Endpoint("127.0.0.1", 4317)))


@pytest.mark.parametrize(
    ("protocol", "attrs", "telemetry"),
    [
        ("grpc", {"rpc.method": "opentelemetry.proto.collector.trace.v1.TraceService/Export"}, True),
        ("grpc", {"rpc.method": "opentelemetry.proto.collector.metrics.v1.MetricsService/Export"}, True),
        ("grpc", {"rpc.method": "opentelemetry.proto.collector.logs.v1.LogsService/Export"}, True),
        ("grpc", {"rpc.method": "jaeger.api_v2.CollectorService/PostSpans"}, True),
        ("grpc", {"rpc.method": "acme.orders.v1.Orders/Create"}, False),
        ("grpc", {"rpc.method": "_OTHER"}, False),
        ("grpc", {}, False),
        ("http", {"http.request.method": "POST", "url.path": "/v1/traces"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/v1/metrics"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/v1/logs"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/api/v2/spans"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/api/traces"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/api/v1/write"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/loki/api/v1/push"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/api/v1/otlp/v1/metrics"}, True),
        ("http", {"http.request.method": "POST", "url.path": "/api/v1/metrics"}, False),  # an app's own
        # a gRPC export seen as plain HTTP/2 (its content-type indexed before the capture began)
        ("http2", {"http.request.method": "POST",
                   "url.path": "/opentelemetry.proto.collector.trace.v1.TraceService/Export"}, True),
        ("http", {"http.request.method": "GET", "url.path": "/v1/traces"}, False),  # a query, not an export
        ("http", {"http.request.method": "POST", "url.path": "/v1/traces/extra"}, False),
        ("http", {"http.request.method": "POST", "url.path": "/api/orders"}, False),
        ("http", {"http.request.method": "POST"}, False),
        ("redis", {"db.operation.name": "set"}, False),
    ],
)
def test_is_telemetry_call(protocol: str, attrs: dict[str, Any], telemetry: bool) -> None:
    assert is_telemetry_call(call(protocol, **attrs)) is telemetry




@pytest.mark.parametrize("traced", [False, True])
def test_the_pipeline_leaves_telemetry_out_unless_asked(traced: bool) -> None:
    exported = Exported()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http", "http2"}))), NoTracker(),
                    builder.build, exported, trace_telemetry=traced)
    pipe.on_call(call("grpc", **{"rpc.method": "opentelemetry.proto.collector.trace.v1.TraceService/Export"}))
    pipe.on_call(call("http", **{"http.request.method": "POST", "url.path": "/v1/metrics"}))
    pipe.on_call(call("http", **{"http.request.method": "POST", "url.path": "/orders"}))
    paths = [s.attributes.get("url.path") or s.attributes.get("rpc.method") for s in exported.spans]
    if traced:
        assert pipe.telemetry_calls == 0 and len(paths) == 3
    else:
        assert pipe.telemetry_calls == 2 and paths == ["/orders"]
    assert not pipe.dropped  # left out on purpose: not a loss


def test_config_key() -> None:
    from hostagent.config import ConfigError, parse_config

    assert parse_config({}, "t.toml").capture.telemetry_calls is False
    assert parse_config({"capture": {"telemetry_calls": True}}, "t.toml").capture.telemetry_calls is True
    with pytest.raises(ConfigError) as info:
        parse_config({"capture": {"telemetry_calls": "yes"}}, "t.toml")
    assert "t.toml" in str(info.value) and "telemetry_calls" in str(info.value)


EXPORT = {"rpc.method": "opentelemetry.proto.collector.trace.v1.TraceService/Export"}
# What the acceptance run exported from another agent's OTLP/gRPC channel once its client's HPACK
# table was partly known: no :path (indexed at the first export), so no rpc.method or url.path.
UNNAMED_GRPC = {"rpc.system.name": "grpc", "hostagent.http2.headers_incomplete": True}
UNNAMED_HTTP2 = {"http.request.method": "POST", "hostagent.http2.headers_incomplete": True}


def on(protocol: str, fd: int, attrs: dict[str, Any], local_port: int = 40001) -> Call:
    return Call(protocol=protocol, role=Role.CLIENT, start_ns=1_000, end_ns=2_000, name="x", attributes=attrs,
                conn=Connection(pid=300, tid=300, fd=fd, peer=Endpoint("127.0.0.1", 4317),
                                local=Endpoint("127.0.0.1", local_port)))


@pytest.mark.parametrize(
    ("calls", "left_out"),
    [
        # an unnamed call on a connection that carried an export: an export too
        ([on("grpc", 7, EXPORT), on("grpc", 7, UNNAMED_GRPC)], [True, True]),
        ([on("grpc", 7, EXPORT), on("http2", 7, UNNAMED_HTTP2)], [True, True]),
        # ... but not before it did, nor on another connection (fd, or the same fd reconnected)
        ([on("grpc", 7, UNNAMED_GRPC), on("grpc", 7, EXPORT)], [False, True]),
        ([on("grpc", 7, EXPORT), on("grpc", 8, UNNAMED_GRPC)], [True, False]),
        ([on("grpc", 7, EXPORT), on("grpc", 7, UNNAMED_GRPC, local_port=40002)], [True, False]),
        # a named call is judged by its name, whatever its connection carried
        ([on("grpc", 7, EXPORT), on("grpc", 7, {"rpc.method": "acme.orders.v1.Orders/Create"})], [True, False]),
        ([on("grpc", 7, EXPORT), on("http2", 7, {"http.request.method": "POST", "url.path": "/orders"})],
         [True, False]),
        # HTTP/1 paths are never lost to a table: a pathless HTTP/1 call is no export
        ([on("http", 7, {"http.request.method": "POST", "url.path": "/v1/traces"}),
          on("http", 7, {"http.request.method": "POST"})], [True, False]),
    ],
)
def test_unnamed_http2_calls_of_an_exporting_connection(calls: list[Call], left_out: list[bool]) -> None:
    telemetry = TelemetryConnections()
    assert [telemetry.is_telemetry(c) for c in calls] == left_out


def test_exporting_connections_are_bounded() -> None:
    telemetry = TelemetryConnections(max_entries=2)
    for fd in (1, 2, 3):
        assert telemetry.is_telemetry(on("grpc", fd, EXPORT))
    assert len(telemetry) == 2
    assert not telemetry.is_telemetry(on("grpc", 1, UNNAMED_GRPC))  # the oldest, forgotten
    assert telemetry.is_telemetry(on("grpc", 3, UNNAMED_GRPC))


def test_the_pipeline_leaves_out_unnamed_calls_of_an_exporting_connection() -> None:
    exported = Exported()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http", "http2"}))), NoTracker(),
                    builder.build, exported)
    pipe.on_call(on("grpc", 7, EXPORT))
    pipe.on_call(on("grpc", 7, UNNAMED_GRPC))
    pipe.on_call(on("grpc", 8, {**UNNAMED_GRPC, "test.call": "fd 8"}))  # another connection: traced
    assert pipe.telemetry_calls == 2
    assert [s.attributes.get("test.call") for s in exported.spans] == ["fd 8"]
