"""The OpenTelemetry SDK's span records, made without their Python constructors.

``SpanContext.__new__`` (validation, keyword defaults) and ``ReadableSpan.__init__`` (thirteen
attribute writes, keywords) run as interpreted Python for every span: ~1.5 us together here,
about a tenth of what the pipeline spends per span. A SpanContext is a tuple and a
ReadableSpan keeps its fields in its ``__dict__``, so the same objects can be made directly.

That relies on the SDK's layout, so it is checked once at import: a context and a span made
both ways must be equal, field for field. With an SDK laid out otherwise, ``FAST`` is False
and the SDK's own constructors are used.
"""

from __future__ import annotations

from typing import Any, Final, Optional, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status

_TRACE_ID_MAX = (1 << 128) - 1
_SPAN_ID_MAX = (1 << 64) - 1
_new_tuple = tuple.__new__
_new_object = object.__new__


def _context_fast(trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: TraceState) -> SpanContext:
    valid = 0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX
    return cast(SpanContext, _new_tuple(SpanContext, (trace_id, span_id, is_remote, flags, state, valid)))


def _span_fast(name: str, context: SpanContext, parent: Optional[SpanContext], resource: Resource,
               attributes: dict[str, Any], kind: SpanKind, status: Status, start_time: int, end_time: int,
               scope: InstrumentationScope) -> ReadableSpan:
    span = cast(ReadableSpan, _new_object(ReadableSpan))
    d = span.__dict__
    d["_name"] = name
    d["_context"] = context
    d["_kind"] = kind
    d["_instrumentation_info"] = None
    d["_instrumentation_scope"] = scope
    d["_parent"] = parent
    d["_start_time"] = start_time
    d["_end_time"] = end_time
    d["_attributes"] = attributes
    d["_events"] = ()
    d["_links"] = ()
    d["_resource"] = resource
    d["_status"] = status
    return span


def _context_sdk(trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: TraceState) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=is_remote, trace_flags=flags, trace_state=state)


def _span_sdk(name: str, context: SpanContext, parent: Optional[SpanContext], resource: Resource,
              attributes: dict[str, Any], kind: SpanKind, status: Status, start_time: int, end_time: int,
              scope: InstrumentationScope) -> ReadableSpan:
    return ReadableSpan(name=name, context=context, parent=parent, resource=resource, attributes=attributes,
                        kind=kind, status=status, start_time=start_time, end_time=end_time,
                        instrumentation_scope=scope)


def _same_layout() -> bool:
    """Whether the direct constructors make what the SDK's make (valid and invalid ids, a
    parent, every ReadableSpan field)."""
    state = TraceState([("k", "v")])
    flags = TraceFlags(TraceFlags.SAMPLED)
    cases = ((7, 9, False), (1 << 100, (1 << 64) - 1, True), (0, 3, False), (1 << 128, 1, False))
    for trace_id, span_id, remote in cases:
        fast = _context_fast(trace_id, span_id, remote, flags, state)
        sdk = _context_sdk(trace_id, span_id, remote, flags, state)
        if type(fast) is not type(sdk) or tuple(fast) != tuple(sdk) or fast.is_valid != sdk.is_valid:
            return False
    ctx, parent = _context_sdk(5, 6, False, flags, state), _context_sdk(5, 4, True, flags, state)
    args2 = ("n", ctx, parent, Resource({"a": 1}), {"b": 2}, SpanKind.SERVER, Status(), 10, 20,
             InstrumentationScope("s", "1"))
    fast_span, sdk_span = _span_fast(*args2), _span_sdk(*args2)  # type: ignore[arg-type]
    return type(fast_span) is type(sdk_span) and fast_span.__dict__ == sdk_span.__dict__


FAST: Final = _same_layout()


def new_context(trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: TraceState) -> SpanContext:
    """``SpanContext(trace_id, span_id, is_remote, flags, state)``."""
    if FAST:
        return _context_fast(trace_id, span_id, is_remote, flags, state)
    return _context_sdk(trace_id, span_id, is_remote, flags, state)


def new_span(name: str, context: SpanContext, parent: Optional[SpanContext], resource: Resource,
             attributes: dict[str, Any], kind: SpanKind, status: Status, start_time: int, end_time: int,
             scope: InstrumentationScope) -> ReadableSpan:
    """``ReadableSpan(...)`` with these fields, no events and no links."""
    if FAST:
        return _span_fast(name, context, parent, resource, attributes, kind, status, start_time, end_time, scope)
    return _span_sdk(name, context, parent, resource, attributes, kind, status, start_time, end_time, scope)
