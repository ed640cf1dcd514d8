"""Calls -> spans with the read API of OpenTelemetry's ``ReadableSpan``, exact ids and timestamps.

We build the span records directly instead of going through a Tracer: a captured call has
already happened, so its start/end times, ids and parent are facts we set, not things the SDK
should measure or generate. It is also ~10x cheaper than start_span()/end() per span. The record
is ``hostagent.traces.record.SpanRecord`` (compiled; see why there), typed ``ReadableSpan`` for
the stages after, which read it through that API.

Trace context (W3C traceparent found on the request):
- SERVER span: joins the caller's trace -- trace id from the traceparent and parent = the
  traceparent's parent-id (a remote SpanContext), exactly as an SDK server span would.
- CLIENT span: the traceparent was written by the *caller's own* SDK, so its parent-id is the
  span id of the SDK's client span for this very request. Reusing that id would duplicate the
  SDK's span; we make the agent's CLIENT span a *child* of it instead (same trace id, parent =
  that span), so the wire detail hangs under the SDK span in the same trace. (Merging the two
  into one span is issue 9.)
- No or invalid traceparent: a new trace id, no parent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Optional, cast

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

import hostagent
from hostagent.model import Call, Connection, Role
from hostagent.policy.resource_redaction import RedactedResources
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.ids import new_span_id, new_trace_id, parse_traceparent
from hostagent.traces.record import SpanRecord

# call -> the Resource of the process that made it (identity's ServiceCache.resource_of)
ResourceFor = Callable[[Call], Resource]
SCOPE: Final = InstrumentationScope("hostagent", hostagent.__version__)

# role -> (SpanKind, its OTLP number: the SDK's value + 1)
_KINDS: Final = {Role.CLIENT: (SpanKind.CLIENT, SpanKind.CLIENT.value + 1),
          Role.SERVER: (SpanKind.SERVER, SpanKind.SERVER.value + 1)}
_INTERNAL: Final = (SpanKind.INTERNAL, SpanKind.INTERNAL.value + 1)
# enum members read once (Final: constants, compared by identity; a module global is a dict
# lookup per use)
_CLIENT: Final = Role.CLIENT
_SERVER: Final = Role.SERVER
_UNSET: Final = Status(StatusCode.UNSET)
_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_EMPTY_STATE: Final = TraceState()


def connection_attributes(attrs: dict, role: Role, conn: Connection) -> None:
    """Add the semantic-convention connection attributes to ``attrs`` (in place).

    ``setdefault`` throughout: what the protocol parser already knew (server.address from the
    Host header, client.address from Forwarded) wins over what the socket says.
    """
    peer = conn.peer
    transport = conn.transport
    if transport:
        attrs.setdefault("network.transport", transport)
    if peer is not None:
        address = peer.address
        if address:
            port = peer.port
            attrs["network.peer.address"] = address
            if port:
                attrs["network.peer.port"] = port
            if transport != "unix":
                attrs.setdefault("network.type", "ipv6" if ":" in address else "ipv4")
            if role is _CLIENT:
                if "server.address" not in attrs:
                    attrs["server.address"] = address
                    if port:
                        attrs["server.port"] = port
                elif port:
                    # Host header without a port: the port we really connected to is the truth.
                    attrs.setdefault("server.port", port)
            elif role is _SERVER:
                attrs.setdefault("client.address", address)
    if role is _SERVER:
        local = conn.local
        if local is not None and local.port:
            attrs.setdefault("server.port", local.port)


class SpanBuilder:
    """``build(call) -> SpanRecord`` (typed ReadableSpan: the API the stages read). Stateless apart
    from the clock and the Resource cache."""

    def __init__(
        self,
        clock: Optional[MonotonicToUnix] = None,
        *,
        resource_for: ResourceFor,
    ) -> None:
        self.clock = clock if clock is not None else MonotonicToUnix()
        # identity's (ServiceCache.resource_of): the one place a process's Resource is built
        self.resource_for = resource_for
        # the same when it is the daemon's RedactedResources (compiled): called natively, not
        # through its __call__'s argument parsing
        self._redacted: Optional[RedactedResources] = (
            resource_for if isinstance(resource_for, RedactedResources) else None)

    def build(self, call: Call) -> ReadableSpan:
        role = call.role
        kind, otlp_kind = _KINDS.get(role, _INTERNAL)

        attrs = call.attributes.copy()
        conn = call.conn
        if conn is not None:
            connection_attributes(attrs, role, conn)

        if call.error_type:
            attrs["error.type"] = call.error_type
            status = Status(StatusCode.ERROR, call.status_message or call.error_type)
        else:
            status = _UNSET

        parent_id = 0  # none
        flags = _SAMPLED
        trace_state = _EMPTY_STATE
        incoming = parse_traceparent(call.traceparent) if call.traceparent else None
        if incoming is not None:
            trace_id, parent_id, raw_flags = incoming  # the parent: remote, with the span's flags and state
            flags = TraceFlags(raw_flags)
            if call.tracestate:
                trace_state = TraceState.from_header([call.tracestate])
        else:
            trace_id = new_trace_id()

        offset = self.clock.offset_ns
        start = call.start_ns + offset
        end = call.end_ns + offset
        if end < start:
            end = start
        redacted = self._redacted
        resource: Resource = redacted.__call__(call) if redacted is not None else self.resource_for(call)
        return cast(ReadableSpan, SpanRecord(call.name, trace_id, new_span_id(), flags, trace_state, parent_id, True,
                                             resource, attrs, kind, otlp_kind, status, start, end, SCOPE))
