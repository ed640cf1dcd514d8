"""RED metrics and self metrics: exact names, units, attributes, counts, the cardinality cap,
and delivery over OTLP/gRPC to the real receiver."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from hostagent.export.memory import InMemoryExporter
from hostagent.export.otlp import make_otlp_metric_exporter
from hostagent.export.queue import ExportQueue
from hostagent.metrics.provider import agent_resource, make_meter_provider
from hostagent.metrics.red import DURATION_BUCKETS, OVERFLOW, RedMetrics, metric_for
from hostagent.metrics.self_metrics import SelfMetrics
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.pipeline_parts import Exported, NoTracker
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


def test_the_service_name_handed_in_is_used_and_not_looked_up_again() -> None:
    """The pipeline has looked the service up already and hands its name to ``record``: the
    name function (the daemon's asks the identity cache) runs only for a Call recorded without."""
    reader = InMemoryMetricReader()
    asked: list[int] = []

    def service_name(c: Call) -> str:
        asked.append(c.conn.pid if c.conn is not None else -1)
        return "looked-up"

    red = RedMetrics(make_meter_provider(extra_readers=[reader]), service_name=service_name)
    red.record(call(ms=20), "checkout")
    red.record(call(ms=30), "checkout")
    red.record(call(ms=40))
    got = points(reader)["http.server.request.duration"]
    assert sorted((p.attributes["service.name"], p.count) for p in got) == [("checkout", 2), ("looked-up", 1)]
    assert asked == [7]


def test_the_pipeline_hands_red_metrics_the_service_it_looked_up() -> None:
    class Identity:
        looked_up = 0

        def service_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Any:
            self.looked_up += 1
            return SimpleNamespace(name=f"svc-{pid}")

    recorded: list[tuple[str, Any]] = []
    identity = Identity()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http"}))), NoTracker(), builder.build,
                    Exported(), identity=identity, metrics=lambda c, s: recorded.append((c.name, s)))
    pipe.on_call(call(ms=20))
    pipe.on_call(call(ms=20, conn=None))  # no connection, no service: RED names it itself
    assert recorded == [("GET /x", "svc-7"), ("GET /x", None)]
    assert identity.looked_up == 1


def test_client_address_from_the_call_wins_over_the_connection() -> None:
    """The Host header's name stays; the port really connected to fills the missing port; server
    metrics take nothing from the connection."""
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]))
    red.record(call("http", Role.CLIENT, attributes={"http.request.method": "GET", "server.address": "api.example",
                                                     "url.path": "/a"}))  # fmt: skip
    red.record(call("http", Role.SERVER, attributes={"http.request.method": "GET"}))
    got = points(reader)
    (client,) = got["http.client.request.duration"]
    (server,) = got["http.server.request.duration"]
    assert dict(client.attributes) == {"http.request.method": "GET", "server.address": "api.example",
                                       "server.port": 5000, "service.name": "web"}  # fmt: skip
    assert dict(server.attributes) == {"http.request.method": "GET", "service.name": "web"}


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


# -- the agent's own aggregation against the SDK's -------------------------------------------------

class _SdkAndOurs:
    """One SDK histogram (on its provider) and the agent's own aggregation of the same histogram
    (on another), each read by an in-memory reader asking ``temporality``; ``record`` feeds both."""

    def __init__(self, temporality: Any) -> None:
        from opentelemetry.sdk.metrics import Histogram as SdkHistogram
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        from hostagent.metrics.histograms import HistogramSet

        self.sdk_reader = InMemoryMetricReader(preferred_temporality={SdkHistogram: temporality})
        self.ours_reader = InMemoryMetricReader(preferred_temporality={SdkHistogram: temporality})
        self.sdk = make_meter_provider(extra_readers=[self.sdk_reader]).get_meter("hostagent", "1").create_histogram(
            "h", unit="s", description="d", explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.ours = HistogramSet(InstrumentationScope("hostagent", "1"), {"h": "d"}, DURATION_BUCKETS)
        assert self.ours.attach(make_meter_provider(extra_readers=[self.ours_reader]))

    def record(self, seconds: float, attrs: dict[str, Any]) -> None:
        self.sdk.record(seconds, attrs)
        self.ours.record("h", frozenset(attrs.items()), attrs, seconds)

    def collect(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(ours, the SDK's) points, collected now."""
        return _comparable(self.ours_reader), _comparable(self.sdk_reader)


def _comparable(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    out.append((sm.scope.name, m.name, m.unit, m.description, m.data.aggregation_temporality,
                                tuple(sorted(p.attributes.items())), p.count, p.sum, tuple(p.bucket_counts),
                                tuple(p.explicit_bounds), p.min, p.max, len(p.exemplars)))
    return sorted(out)


@pytest.mark.parametrize("temporality", ["CUMULATIVE", "DELTA"])
def test_own_aggregation_makes_the_sdks_points(temporality: str) -> None:
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    t = AggregationTemporality[temporality]
    both = _SdkAndOurs(t)
    a, b = {"k": "a"}, {"k": "b", "n": 1}
    # 0.005 is a bound (it counts in the bucket it ends), 12 s is past the last one
    for seconds, attrs in [(0.003, a), (0.005, a), (0.0051, a), (0.7, b), (12.0, b), (0.0, a)]:
        both.record(seconds, attrs)
    ours, sdk = both.collect()
    assert ours == sdk != []
    # a second collection after one more value of one series: cumulative repeats both series,
    # delta has only what came since; a third with nothing new: delta has no point at all
    both.record(0.03, a)
    ours, sdk = both.collect()
    assert ours == sdk and len(ours) == (2 if t is AggregationTemporality.CUMULATIVE else 1)
    ours, sdk = both.collect()
    assert ours == sdk and len(ours) == (2 if t is AggregationTemporality.CUMULATIVE else 0)


def test_red_falls_back_to_the_sdk_instruments_without_reachable_readers() -> None:
    from opentelemetry.metrics import NoOpMeterProvider

    red = RedMetrics(NoOpMeterProvider())  # type: ignore[arg-type]
    assert red.record(call()) and red.recorded == 1 and not red.aggregated
    assert RedMetrics(make_meter_provider(extra_readers=[InMemoryMetricReader()])).aggregated


def test_red_points_share_the_scope_of_the_self_metrics() -> None:
    reader = InMemoryMetricReader()
    provider = make_meter_provider(extra_readers=[reader])
    own = SelfMetrics(provider)
    own.watch_queue(ExportQueue([InMemoryExporter()]))
    red = RedMetrics(provider)
    red.record(call())
    data = reader.get_metrics_data()
    assert data is not None and len(data.resource_metrics) == 1
    scopes = data.resource_metrics[0].scope_metrics
    assert [sm.scope.name for sm in scopes] == ["hostagent"]
    names = {m.name for m in scopes[0].metrics}
    assert "http.server.request.duration" in names and len(names) > 1
    assert data.resource_metrics[0].resource.attributes["service.name"] == "hostagent"
