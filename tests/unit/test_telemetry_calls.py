"""Which calls carry telemetry (hostagent.policy.telemetry), and the pipeline leaving them out by
default ([capture] telemetry_calls)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline
from hostagent.policy.telemetry import is_telemetry_call
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
