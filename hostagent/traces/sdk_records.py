"""The OpenTelemetry SDK's ``SpanContext``, made without its Python constructor.

``SpanContext.__new__`` (validation, keyword defaults) runs as interpreted Python for every
context made. A SpanContext is a tuple, so the same object can be made directly. (The spans
themselves are ``hostagent.traces.record.SpanRecord``, which makes its contexts here when asked.)

That relies on the SDK's layout, so it is checked once at import: a context made both ways must
be equal, field for field. With an SDK laid out otherwise, ``FAST`` is False and the SDK's own
constructor is used.
"""

from __future__ import annotations

from typing import Final, cast

from opentelemetry.trace import SpanContext, TraceFlags, TraceState

_TRACE_ID_MAX = (1 << 128) - 1
_SPAN_ID_MAX = (1 << 64) - 1
_new_tuple = tuple.__new__


def _context_fast(trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: TraceState) -> SpanContext:
    valid = 0 < trace_id <= _TRACE_ID_MAX and 0 < span_id <= _SPAN_ID_MAX
    return cast(SpanContext, _new_tuple(SpanContext, (trace_id, span_id, is_remote, flags, state, valid)))


def _context_sdk(trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: TraceState) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=is_remote, trace_flags=flags, trace_state=state)


def _same_layout() -> bool:
    """Whether the direct constructor makes what the SDK's makes (valid and invalid ids)."""
    state = TraceState([("k", "v")])
    flags = TraceFlags(TraceFlags.SAMPLED)
    cases = ((7, 9, False), (1 << 100, (1 << 64) - 1, True), (0, 3, False), (1 << 128, 1, False))
    for trace_id, span_id, remote in cases:
        fast = _context_fast(trace_id, span_id, remote, flags, state)
        sdk = _context_sdk(trace_id, span_id, remote, flags, state)
        if type(fast) is not type(sdk) or tuple(fast) != tuple(sdk) or fast.is_valid != sdk.is_valid:
            return False
    return True


FAST: Final = _same_layout()


def new_context(trace_id: int, span_id: int, is_remote: bool, flags: TraceFlags, state: TraceState) -> SpanContext:
    """``SpanContext(trace_id, span_id, is_remote, flags, state)``."""
    if FAST:
        return _context_fast(trace_id, span_id, is_remote, flags, state)
    return _context_sdk(trace_id, span_id, is_remote, flags, state)
