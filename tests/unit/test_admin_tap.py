"""SpanTap: cheap when idle, filters, bounded per-subscriber queues that count drops."""

from __future__ import annotations

import pytest

from hostagent.admin.tap import SpanSummary, SpanTap, TapFilter
from hostagent.model import Call, Connection, Endpoint, Role


def span(service="web", protocol="http", status="ok", ms=10.0, n=0) -> SpanSummary:
    return SpanSummary(f"{n:032x}", f"{n:016x}", "GET /", service, protocol, "server", 0, ms, status)


def test_active_only_while_someone_listens() -> None:
    tap = SpanTap()
    assert tap.active is False
    sub = tap.subscribe(TapFilter())
    assert tap.active is True and tap.subscribers == 1
    sub.close()
    assert tap.active is False and tap.subscribers == 0
    tap.publish(span())  # nobody listening: nothing to do, no error


@pytest.mark.parametrize(
    ("flt", "kept"),
    [
        (TapFilter(), [0, 1, 2, 3]),
        (TapFilter(service="api"), [1]),
        (TapFilter(protocol="redis"), [2]),
        (TapFilter(status="error"), [3]),
        (TapFilter(min_duration_ms=100), [2, 3]),
        (TapFilter(status="ok", min_duration_ms=100), [2]),
    ],
)
def test_filters(flt: TapFilter, kept: list[int]) -> None:
    tap = SpanTap()
    sub = tap.subscribe(flt)
    for s in [
        span(n=0),
        span(service="api", n=1),
        span(protocol="redis", ms=150, n=2),
        span(status="error", ms=100, n=3),
    ]:
        tap.publish(s)
    got = []
    while (item := sub.get(timeout=0.01)) is not None:
        got.append(int(item[0].span_id, 16))
    assert got == kept


def test_slow_subscriber_drops_and_is_told() -> None:
    tap = SpanTap(queue_size=3)
    sub = tap.subscribe(TapFilter())
    for n in range(10):
        tap.publish(span(n=n))
    first = sub.get(timeout=0.01)
    assert first is not None and first[1] == 7 and first[0].span_id == f"{0:016x}"
    assert sub.get(timeout=0.01)[1] == 0  # type: ignore[index]


def test_subscriber_limit() -> None:
    tap = SpanTap(max_subscribers=2)
    tap.subscribe(TapFilter())
    tap.subscribe(TapFilter())
    with pytest.raises(RuntimeError, match="limit 2"):
        tap.subscribe(TapFilter())


def test_summary_from_call() -> None:
    call = Call(
        protocol="redis",
        role=Role.CLIENT,
        start_ns=1_000,
        end_ns=2_501_000,
        name="GET",
        attributes={"db.system.name": "redis", "x": ("a", "b"), "n": 3},
        error_type="ERR",
        conn=Connection(pid=1, tid=1, fd=3, peer=Endpoint("127.0.0.1", 6379)),
    )
    s = SpanSummary.from_call(call, trace_id=0xAB, span_id=0xCD, service="cart", start_unix_nano=5)
    assert s == SpanSummary(
        trace_id="000000000000000000000000000000ab",
        span_id="00000000000000cd",
        name="GET",
        service="cart",
        protocol="redis",
        kind="client",
        start_unix_nano=5,
        duration_ms=2.5,
        status="error",
        error_type="ERR",
        peer="127.0.0.1:6379",
        attributes={"db.system.name": "redis", "x": "a,b", "n": "3"},
    )
