"""RED metrics and self metrics: exact names, units, attributes, counts, the cardinality cap,
and delivery over OTLP/gRPC to the real receiver."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hostagent.export.memory import InMemoryExporter
from hostagent.export.otlp import make_otlp_metric_exporter
from hostagent.export.queue import ExportQueue
from hostagent.metrics.provider import agent_resource, make_meter_provider
from hostagent.metrics.red import DURATION_BUCKETS, OVERFLOW, RedMetrics, metric_for
from hostagent.metrics.self_metrics import SelfMetrics
from hostagent.model import Call, Connection, Endpoint, Role
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.unit.test_export_queue import span


def call(protocol: str = "http", role: Role = Role.SERVER, ms: float = 20, **kw: Any) -> Call:
    fields: dict[str, Any] = dict(
        protocol=protocol,
        role=role,
        start_ns=10_000,
        end_ns=10_000 + int(ms * 1e6),
        name="GET /x",
        attributes={
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "http.route": "/x",
            "url.path": "/x?id=123",  # high cardinality: must not become a metric attribute
        },
        conn=Connection(
            pid=7,
            tid=7,
            fd=3,
            local=Endpoint("127.0.0.1", 8080),
            peer=Endpoint("127.0.0.1", 5000),
            comm="web",
        ),
    )
    fields.update(kw)
    return Call(**fields)


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    result: dict[str, list[Any]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                result.setdefault(metric.name, []).extend(metric.data.data_points)
                assert metric.unit in ("s", "{item}", "{span}")
    return result


@pytest.mark.parametrize(
    ("protocol", "role", "metric"),
    [
        ("http", Role.SERVER, "http.server.request.duration"),
        ("http", Role.CLIENT, "http.client.request.duration"),
        ("http2", Role.CLIENT, "http.client.request.duration"),
        ("grpc", Role.SERVER, "rpc.server.call.duration"),
        ("grpc", Role.CLIENT, "rpc.client.call.duration"),
        ("postgresql", Role.CLIENT, "db.client.operation.duration"),
        ("mysql", Role.CLIENT, "db.client.operation.duration"),
        ("redis", Role.CLIENT, "db.client.operation.duration"),
        ("dns", Role.CLIENT, "dns.lookup.duration"),
        ("postgresql", Role.SERVER, None),
        ("http", Role.UNKNOWN, None),
    ],
)
def test_metric_names(protocol: str, role: Role, metric: str) -> None:
    assert metric_for(call(protocol, role)) == metric


def test_http_server_histogram_exact() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]))
    for ms in (3, 20, 20, 700):
        red.record(call(ms=ms))
    red.record(
        call(
            ms=40,
            error_type="500",
            attributes={"http.request.method": "GET", "http.response.status_code": 500},
        )
    )
    got = points(reader)["http.server.request.duration"]
    by_status = {p.attributes["http.response.status_code"]: p for p in got}
    ok = by_status[200]
    assert dict(ok.attributes) == {
        "http.request.method": "GET",
        "http.response.status_code": 200,
        "http.route": "/x",
        "service.name": "web",
    }
    assert ok.count == 4
    assert ok.sum == pytest.approx(0.743)
    assert tuple(ok.explicit_bounds) == DURATION_BUCKETS
    # 3 ms -> le 0.005; 20 ms -> le 0.025 (x2); 700 ms -> le 0.75
    assert list(ok.bucket_counts) == [1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    err = by_status[500]
    assert err.count == 1 and err.attributes["error.type"] == "500"


def test_client_gets_server_address_from_the_connection() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]))
    red.record(
        call(
            "postgresql",
            Role.CLIENT,
            attributes={"db.system.name": "postgresql", "db.operation.name": "SELECT"},
        )
    )
    (point,) = points(reader)["db.client.operation.duration"]
    assert dict(point.attributes) == {
        "db.system.name": "postgresql",
        "db.operation.name": "SELECT",
        "server.address": "127.0.0.1",
        "server.port": 5000,
        "service.name": "web",
    }


def test_cardinality_cap_overflows() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]), max_series_per_metric=3)
    for i in range(10):
        red.record(call(attributes={"http.request.method": "GET", "http.route": f"/r{i}"}))
    got = points(reader)["http.server.request.duration"]
    assert len(got) == 4  # 3 real series + the overflow series
    overflow = [p for p in got if dict(p.attributes) == OVERFLOW]
    assert len(overflow) == 1 and overflow[0].count == 7
    assert (red.recorded, red.overflowed) == (10, 7)


def test_skipped_calls_are_counted() -> None:
    red = RedMetrics(make_meter_provider(extra_readers=[InMemoryMetricReader()]))
    assert red.record(call("postgresql", Role.SERVER)) is False
    assert red.skipped == 1


def test_self_metrics_from_queue() -> None:
    reader = InMemoryMetricReader()
    own = SelfMetrics(make_meter_provider(extra_readers=[reader]))
    memory = InMemoryExporter()
    queue = ExportQueue([memory], max_queue=5, batch_size=100, delay_s=60)
    own.watch_queue(queue)
    own.register_drops("ringbuf_lost", lambda: 17)
    queue.put_many(span(i) for i in range(8))  # 5 queued, 3 dropped (queue full)
    queue.start()
    assert queue.shutdown(5)
    got = points(reader)
    drops = {p.attributes["cause"]: p.value for p in got["hostagent.dropped"]}
    assert drops == {"queue_full": 3, "export_failed": 0, "shutdown": 0, "ringbuf_lost": 17}
    (exported,) = got["hostagent.spans.exported"]
    assert exported.value == 5


def test_agent_resource_ignores_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "leak=yes")
    attrs = agent_resource().attributes
    assert attrs["service.name"] == "hostagent" and "leak" not in attrs


def test_metrics_over_otlp_grpc(otlp_receiver: OtlpGrpcReceiver) -> None:
    exporter = make_otlp_metric_exporter(otlp_receiver.endpoint, "grpc", timeout_s=5)
    provider = make_meter_provider(exporter, interval_s=3600)  # only force_flush exports
    red = RedMetrics(provider)
    own = SelfMetrics(provider)
    own.register_drops("queue_full", lambda: 4)
    red.record(call(ms=20))
    red.record(call(ms=30))
    assert provider.force_flush(10_000)
    got = otlp_receiver.recorder.wait_for_points(
        lambda ps: any(p.name == "http.server.request.duration" for p in ps), 10
    )
    (hist,) = [p for p in got if p.name == "http.server.request.duration"]
    assert (hist.type, hist.unit, hist.count) == ("histogram", "s", 2)
    assert hist.value == pytest.approx(0.05)
    assert hist.attributes["service.name"] == "web"
    assert hist.resource["service.name"] == "hostagent"
    (dropped,) = [p for p in got if p.name == "hostagent.dropped"]
    assert (dropped.type, dropped.value, dropped.attributes) == ("sum", 4.0, {"cause": "queue_full"})
    provider.shutdown()
