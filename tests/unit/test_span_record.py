"""SpanRecord reads as the SDK ReadableSpan the span builder made before, and moves in place."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.linking import respan
from hostagent.traces.record import SpanRecord
from hostagent.traces.spans import SpanBuilder

RESOURCE = Resource({"service.name": "svc"})
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CONN = Connection(pid=42, tid=43, fd=7, local=Endpoint("127.0.0.1", 8080), peer=Endpoint("127.0.0.1", 5000),
                  transport="tcp", comm="app")
# what the agent's consumers read of a span: the console, the tap, sampling, the SDK layering, the
# SDK's OTLP encoder (the OTLP/HTTP path)
API = ("name", "context", "parent", "kind", "start_time", "end_time", "resource", "status",
       "instrumentation_scope", "events", "links", "dropped_attributes",
       "dropped_events", "dropped_links")


def build(**kw: Any) -> ReadableSpan:
    fields: dict[str, Any] = dict(protocol="http", role=Role.SERVER, start_ns=1_000, end_ns=3_500, name="GET /x",
                                  attributes={"http.request.method": "GET"}, conn=CONN)
    fields.update(kw)
    return SpanBuilder(MonotonicToUnix(10**18), resource_for=lambda call: RESOURCE).build(Call(**fields))


def readable(span: Any) -> ReadableSpan:
    """The SDK's ReadableSpan with ``span``'s fields: what SpanBuilder returned before."""
    return ReadableSpan(name=span.name, context=span.context, parent=span.parent, resource=span.resource,
                        attributes=dict(span.attributes), kind=span.kind, status=span.status,
                        start_time=span.start_time, end_time=span.end_time,
                        instrumentation_scope=span.instrumentation_scope)


def same_api(got: Any, want: ReadableSpan) -> None:
    for name in API:
        assert getattr(got, name) == getattr(want, name), name
    assert got.get_span_context() == want.get_span_context()
    assert got.instrumentation_info is None  # the SDK's: None, with a deprecation warning
    assert dict(got.attributes) == dict(want.attributes or {})


@pytest.mark.parametrize("kw", [
    {},  # a new trace, no parent
    {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"},  # a remote parent, its state
    {"traceparent": TRACEPARENT[:-2] + "00", "role": Role.CLIENT},  # not sampled, a client
    {"error_type": "500", "status_message": "Internal Server Error", "role": Role.UNKNOWN},
])
def test_the_builder_makes_records_that_read_as_the_sdks_span(kw: dict[str, Any]) -> None:
    span = build(**kw)
    assert type(span) is SpanRecord
    same_api(span, readable(span))
    assert isinstance(span.attributes, MappingProxyType)  # read only, as the SDK's


def test_contexts_are_made_once_and_equal_the_sdks() -> None:
    span = build(traceparent=TRACEPARENT)
    assert span.context is span.context and span.parent is span.parent
    assert type(span.context) is SpanContext and span.context.is_valid and not span.context.is_remote
    assert span.parent is not None and span.parent.is_remote


@pytest.mark.parametrize("traceparent", [None, TRACEPARENT])
def test_respan_moves_a_record_in_place_as_it_moves_a_readable_span(traceparent: Any) -> None:
    record = build(traceparent=traceparent)
    sdk = readable(record)
    own_id = record.context.span_id
    moved = respan(record, 0x1234, 0x5678)
    assert moved is record
    same_api(moved, respan(sdk, 0x1234, 0x5678))
    assert (moved.context.trace_id, moved.context.span_id) == (0x1234, own_id)
    assert moved.parent is not None
    assert (moved.parent.trace_id, moved.parent.span_id, moved.parent.is_remote) == (0x1234, 0x5678, False)


class CapturingTap:
    active = True

    def __init__(self) -> None:
        self.published: list[Any] = []

    def publish(self, summary: Any) -> None:
        self.published.append(summary)


def test_the_console_and_the_tap_show_a_record_as_its_readable_span() -> None:
    from hostagent.admin.tap import tap_observer
    from hostagent.export.console import format_span

    span = build(traceparent=TRACEPARENT, error_type="503")
    twin = readable(span)
    assert format_span(span) == format_span(twin)
    tap = CapturingTap()
    observe = tap_observer(tap)  # type: ignore[arg-type]
    call = Call(protocol="http", role=Role.SERVER, start_ns=1, end_ns=2, name="GET", conn=CONN)
    observe(call, span)
    observe(call, twin)
    assert tap.published[0] == tap.published[1]
