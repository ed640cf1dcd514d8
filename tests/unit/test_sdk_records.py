"""hostagent.traces.sdk_records: SpanContext and ReadableSpan made without the SDK's constructors
must be the objects the SDK's constructors make."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from hostagent.traces import sdk_records

FLAGS = TraceFlags(TraceFlags.SAMPLED)
STATE = TraceState([("vendor", "x")])


def test_the_installed_sdk_takes_the_direct_path() -> None:
    assert sdk_records.FAST is True


def test_contexts_equal_the_sdks_valid_or_not() -> None:
    cases = [
        (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False),
        ((1 << 128) - 1, (1 << 64) - 1, True),
        (0, 5, False),  # invalid trace id
        (5, 0, False),  # invalid span id
        (1 << 128, 5, False),  # out of range
    ]
    for trace_id, span_id, remote in cases:
        got = sdk_records.new_context(trace_id, span_id, remote, FLAGS, STATE)
        want = SpanContext(trace_id, span_id, is_remote=remote, trace_flags=FLAGS, trace_state=STATE)
        assert type(got) is SpanContext
        assert got == want
        assert (got.trace_id, got.span_id, got.is_remote, got.trace_flags, got.trace_state, got.is_valid) == (
            want.trace_id, want.span_id, want.is_remote, want.trace_flags, want.trace_state, want.is_valid)


def test_span_equals_the_sdks_field_for_field() -> None:
    ctx = SpanContext(11, 12, is_remote=False, trace_flags=FLAGS, trace_state=STATE)
    parent = SpanContext(11, 13, is_remote=True, trace_flags=FLAGS, trace_state=STATE)
    resource = Resource({"service.name": "svc"})
    scope = InstrumentationScope("hostagent", "0")
    status = Status(StatusCode.ERROR, "boom")
    attrs = {"http.request.method": "GET", "http.response.status_code": 500}
    got = sdk_records.new_span("GET /x", ctx, parent, resource, attrs, SpanKind.SERVER, status, 100, 250, scope)
    want = ReadableSpan(name="GET /x", context=ctx, parent=parent, resource=resource, attributes=attrs,
                        kind=SpanKind.SERVER, status=status, start_time=100, end_time=250,
                        instrumentation_scope=scope)  # fmt: skip
    assert type(got) is ReadableSpan
    assert got.__dict__ == want.__dict__
    assert (got.name, got.context, got.parent, got.kind, got.start_time, got.end_time, got.status.description,
            dict(got.attributes or {}), got.events, got.links, got.resource, got.instrumentation_scope) == (
        "GET /x", ctx, parent, SpanKind.SERVER, 100, 250, "boom", attrs, (), (), resource, scope)
    assert got.to_json() == want.to_json()
