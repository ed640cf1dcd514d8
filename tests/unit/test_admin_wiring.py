"""The daemon glue: the tail observer over real OpenTelemetry spans; start_admin's status."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from hostagent.admin.tap import SpanTap, TapFilter, tap_observer
from hostagent.model import Call, Role


def _span() -> ReadableSpan:
    ctx = SpanContext(trace_id=0x1234, span_id=0x56, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name="GET /x", context=ctx, resource=Resource({"service.name": "shop"}), start_time=1_700_000_000_000
    )


def test_observer_is_idle_without_subscribers_and_publishes_with_them() -> None:
    tap = SpanTap()
    observe = tap_observer(tap)
    call = Call("http", Role.SERVER, 10, 2_000_010, "GET /x", attributes={"http.response.status_code": 200})
    observe(call, _span())  # nobody listening: nothing queued anywhere
    sub = tap.subscribe(TapFilter(service="shop"))
    observe(call, _span())
    item = sub.get(timeout=1)
    assert item is not None
    summary, dropped = item
    assert dropped == 0
    assert (summary.trace_id, summary.span_id, summary.service, summary.kind, summary.duration_ms) == (
        f"{0x1234:032x}",
        f"{0x56:016x}",
        "shop",
        "server",
        2.0,
    )
    assert summary.start_unix_nano == 1_700_000_000_000
    assert summary.attributes == {"http.response.status_code": "200"}
