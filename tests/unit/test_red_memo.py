"""RedMetrics' memo of data point attributes (inputs -> attributes, series key): a Call like one
seen before reuses its attributes, and nothing it is made from may be left out of the memo's key."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from hostagent.metrics.provider import make_meter_provider
from hostagent.metrics.red import OVERFLOW, RedMetrics, metric_for
from hostagent.model import Call, Connection, Endpoint, Role
from tests.unit.test_export_metrics import call, points


def _by_attributes(reader: InMemoryMetricReader) -> Counter[tuple[str, frozenset[tuple[str, Any]]]]:
    return Counter({(name, frozenset(p.attributes.items())): p.count
                    for name, ps in points(reader).items() for p in ps})  # fmt: skip


def test_a_call_seen_before_builds_no_attributes() -> None:
    """Delta points are new series after each collection: their attribute dicts are the one the
    memo made for the first Call (each Call built its own before)."""
    from opentelemetry.sdk.metrics import Histogram
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    red = RedMetrics(make_meter_provider(extra_readers=[reader]))
    seen = []
    for _ in range(3):
        red.record(call())
        red.record(call("http", Role.CLIENT))
        got = points(reader)
        seen.append([p.attributes for name in sorted(got) for p in got[name]])
    assert [len(s) for s in seen] == [2, 2, 2]
    assert all(a is b for a, b in zip(seen[0], seen[2]))
    assert red.recorded == 6 and len(red._memo) == 2


@pytest.mark.parametrize("change", [
    {"service": "other"},
    {"error_type": "500"},
    {"attributes": {"http.request.method": "GET", "http.response.status_code": 404, "http.route": "/x"}},
    {"attributes": {"http.request.method": "GET", "http.response.status_code": 200, "http.route": "/y"}},
    {"attributes": {"http.request.method": "POST", "http.response.status_code": 200, "http.route": "/x"}},
    {"attributes": {"http.request.method": "GET", "http.response.status_code": 200}},  # no route
])
def test_a_different_input_is_a_different_series(change: dict[str, Any]) -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]))
    service = change.pop("service", "web")
    for _ in range(3):
        red.record(call(), "web")
        red.record(call(**change), service)
    got = points(reader)["http.server.request.duration"]
    assert [p.count for p in got] == [3, 3]
    first, second = (dict(p.attributes) for p in got)
    assert first == red.attributes(call(), "http.server.request.duration", "web")
    assert second == red.attributes(call(**change), "http.server.request.duration", service)


def test_client_series_follow_the_connection() -> None:
    """Same Call attributes, another peer: the server.address/port the connection fills in
    make another series; when the Call names both, the connection makes no difference."""
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]))
    attrs = {"http.request.method": "GET"}
    named = {"http.request.method": "GET", "server.address": "api", "server.port": 80}
    for peer in (Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80), Endpoint("10.0.0.1", 81)) * 2:
        conn = Connection(pid=7, tid=7, fd=3, local=Endpoint("10.0.0.9", 4000), peer=peer, comm="web")
        red.record(call("http", Role.CLIENT, attributes=dict(attrs), conn=conn))
        red.record(call("http", Role.CLIENT, attributes=dict(named), conn=conn))
    got = {(p.attributes["server.address"], p.attributes["server.port"]): p.count
           for p in points(reader)["http.client.request.duration"]}  # fmt: skip
    assert got == {("10.0.0.1", 80): 2, ("10.0.0.2", 80): 2, ("10.0.0.1", 81): 2, ("api", 80): 6}


def test_overflow_is_counted_per_call_and_admitted_series_keep_their_points() -> None:
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]), max_series_per_metric=2)
    for _ in range(3):
        for route in ("/a", "/b", "/c", "/d"):
            red.record(call(attributes={"http.request.method": "GET", "http.route": route}))
    got = {p.attributes.get("http.route"): p.count for p in points(reader)["http.server.request.duration"]}
    assert got == {"/a": 3, "/b": 3, None: 6}
    assert (red.recorded, red.overflowed) == (12, 6)
    assert OVERFLOW in [dict(p.attributes) for p in points(reader)["http.server.request.duration"]]


def _reference(calls: list[tuple[Call, str]], red: RedMetrics, cap: int) -> Counter[Any]:
    """The points the unmemoised algorithm makes: each Call's attributes, admitted while the
    metric has fewer than ``cap`` series, else the overflow series."""
    series: dict[str, set[frozenset[tuple[str, Any]]]] = {}
    out: Counter[Any] = Counter()
    for c, service in calls:
        metric = metric_for(c)
        assert metric is not None
        key = frozenset(red.attributes(c, metric, service).items())
        seen = series.setdefault(metric, set())
        if key not in seen:
            if len(seen) >= cap:
                key = frozenset(OVERFLOW.items())
            else:
                seen.add(key)
        out[(metric, key)] += 1
    return out


@pytest.mark.parametrize("cap", [3, 2000])
def test_memo_matches_the_unmemoised_points(cap: int) -> None:
    rng = random.Random(7)
    peers = [Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 5432), None]
    sources = [{}, {"server.address": "db"}, {"server.port": 6543}, {"server.address": "db", "server.port": 1}]
    calls = []
    for _ in range(600):
        protocol, role = rng.choice([("http", Role.SERVER), ("http", Role.CLIENT), ("postgresql", Role.CLIENT),
                                     ("dns", Role.CLIENT)])  # fmt: skip
        attrs = {"http.request.method": rng.choice(["GET", "PUT"]), "http.response.status_code": rng.choice([200, 500]),
                 "db.operation.name": rng.choice(["SELECT", "INSERT"]), **rng.choice(sources)}  # fmt: skip
        if rng.random() < 0.3:
            del attrs["http.request.method"]
        peer = rng.choice(peers)
        conn = Connection(pid=7, tid=7, fd=3, local=Endpoint("10.0.0.9", 4000), peer=peer, comm="web") \
            if rng.random() < 0.9 else None  # fmt: skip
        c = call(protocol, role, attributes=attrs, conn=conn, error_type=rng.choice([None, "", "500"]))
        calls.append((c, rng.choice(["a", "b"])))
    reader = InMemoryMetricReader()
    red = RedMetrics(make_meter_provider(extra_readers=[reader]), max_series_per_metric=cap)
    for c, service in calls:
        red.record(c, service)
    assert _by_attributes(reader) == _reference(calls, red, cap)
    assert red.recorded == len(calls)


def test_memo_is_bounded() -> None:
    red = RedMetrics(make_meter_provider(extra_readers=[InMemoryMetricReader()]), max_series_per_metric=2)
    for route, service in itertools.product(range(50), "ab"):
        red.record(call(attributes={"http.route": str(route)}), service)
        assert len(red._memo) <= red._memo_max
