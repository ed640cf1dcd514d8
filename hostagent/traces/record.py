"""SpanRecord: the agent's span, a compiled class with the read API of the SDK's ``ReadableSpan``.

Why: every stage after the span build (sampling, trace linking, the OTLP encoder, the tap) read a
ReadableSpan through its properties or its ``__dict__``, and its ids through SpanContext's
properties: interpreted calls, several per span and stage. A native (mypyc) class keeps its fields
in a C struct that the compiled stages read directly, the ids as ints (``trace_id``, ``span_id``,
``parent_span_id``), and the kind as its OTLP number. The SpanContexts (``context``, ``parent``,
``get_span_context()``) are made only when something asks for them (sampling, the tap, the SDK
layering, the SDK's encoder on the OTLP/HTTP path), and moving a span into a linked trace
(``move``) changes two ints instead of making two contexts.

Everything else reads it as a ReadableSpan: name, kind, start_time, end_time, attributes (read-only,
as the SDK's), resource, status, instrumentation_scope, events and links (none), dropped_* (0).
Not a ReadableSpan subclass (a native class cannot have one as its base): nothing in the agent
asks ``isinstance(span, ReadableSpan)``, and the SDK's encoder does not either.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Optional

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status

from hostagent.traces.sdk_records import new_context


class SpanRecord:
    """One finished span; the ids are non-zero ints, the parent's flags and trace state are the
    span's own (as SpanBuilder and the trace linking make them)."""

    def __init__(self, name: str, trace_id: int, span_id: int, flags: TraceFlags, state: TraceState,
                 parent_span_id: int, parent_remote: bool, resource: Resource, attributes: dict[str, Any],
                 kind: SpanKind, otlp_kind: int, status: Status, start_time: int, end_time: int,
                 scope: InstrumentationScope) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.trace_flags = flags
        self.trace_state = state
        self.parent_span_id = parent_span_id  # 0: no parent
        self.parent_remote = parent_remote
        self.resource = resource
        self.attrs = attributes  # the dict itself, for the compiled stages
        self.kind = kind
        self.otlp_kind = otlp_kind  # Span.SpanKind of OTLP: the SDK's value + 1
        self.status = status
        self.start_time = start_time
        self.end_time = end_time
        self.instrumentation_scope = scope
        self.events: tuple[Any, ...] = ()
        self.links: tuple[Any, ...] = ()
        self._context: Optional[SpanContext] = None  # made on first use, dropped by ``move``
        self._parent: Optional[SpanContext] = None

    def move(self, trace_id: int, parent_span_id: int) -> None:
        """Into ``trace_id`` under the local span ``parent_span_id``, its own span id kept."""
        self.trace_id = trace_id
        self.parent_span_id = parent_span_id
        self.parent_remote = False
        self._context = None
        self._parent = None

    @property
    def context(self) -> SpanContext:
        ctx = self._context
        if ctx is None:
            ctx = self._context = new_context(self.trace_id, self.span_id, False, self.trace_flags, self.trace_state)
        return ctx

    def get_span_context(self) -> SpanContext:
        return self.context

    @property
    def parent(self) -> Optional[SpanContext]:
        if not self.parent_span_id:
            return None
        ctx = self._parent
        if ctx is None:
            ctx = self._parent = new_context(self.trace_id, self.parent_span_id, self.parent_remote,
                                             self.trace_flags, self.trace_state)
        return ctx

    @property
    def attributes(self) -> MappingProxyType[str, Any]:
        return MappingProxyType(self.attrs)

    @property
    def dropped_attributes(self) -> int:
        return 0

    @property
    def dropped_events(self) -> int:
        return 0

    @property
    def dropped_links(self) -> int:
        return 0

    @property
    def instrumentation_info(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"SpanRecord(name={self.name!r}, trace_id={self.trace_id:032x}, span_id={self.span_id:016x})"
