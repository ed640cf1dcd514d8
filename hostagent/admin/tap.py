"""SpanTap: a live copy of exported spans for ``TailSpans`` subscribers.

The pipeline calls ``tap.publish(summary)`` for each exported call; when nobody listens it costs
one attribute read (check ``tap.active`` before even building the summary). Each subscriber has
its own bounded queue: a slow reader loses spans (counted, reported with the next span it gets)
and never blocks the pipeline.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from hostagent.model import Call, Role


@dataclass(frozen=True)
class SpanSummary:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    name: str
    service: str
    protocol: str
    kind: str  # "client" | "server"
    start_unix_nano: int
    duration_ms: float
    status: str  # "ok" | "error"
    error_type: str = ""
    peer: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_call(
        cls,
        call: Call,
        *,
        trace_id: int,
        span_id: int,
        service: str,
        start_unix_nano: int,
        max_attributes: int = 32,
    ) -> SpanSummary:
        """Build from a (redacted) Call; attribute values are stringified and bounded."""
        peer = ""
        if call.conn is not None and call.conn.peer is not None:
            peer = f"{call.conn.peer.address}:{call.conn.peer.port}"
        attrs = {}
        for key, value in list(call.attributes.items())[:max_attributes]:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            attrs[key] = text[:256]
        return cls(
            trace_id=f"{trace_id:032x}",
            span_id=f"{span_id:016x}",
            name=call.name,
            service=service,
            protocol=call.protocol,
            kind="server" if call.role == Role.SERVER else "client",
            start_unix_nano=start_unix_nano,
            duration_ms=max(0, call.end_ns - call.start_ns) / 1e6,
            status="error" if call.error_type else "ok",
            error_type=call.error_type or "",
            peer=peer,
            attributes=attrs,
        )


@dataclass(frozen=True)
class TapFilter:
    service: str = ""
    protocol: str = ""
    status: str = ""  # "", "ok", "error"
    min_duration_ms: float = 0.0

    def matches(self, span: SpanSummary) -> bool:
        return (
            (not self.service or span.service == self.service)
            and (not self.protocol or span.protocol == self.protocol)
            and (not self.status or span.status == self.status)
            and span.duration_ms >= self.min_duration_ms
        )


class Subscription:
    def __init__(self, tap: SpanTap, flt: TapFilter, size: int) -> None:
        self._tap = tap
        self.filter = flt
        self.queue: queue.Queue[SpanSummary] = queue.Queue(maxsize=size)
        # Bumped by publishers without a lock: a count that may be off by one under concurrent
        # publishers is cheaper than a lock per span.
        self._dropped = 0
        self.closed = False

    def offer(self, span: SpanSummary) -> None:
        if not self.filter.matches(span):
            return
        try:
            self.queue.put_nowait(span)
        except queue.Full:
            self._dropped += 1

    def get(self, timeout: float) -> Optional[tuple[SpanSummary, int]]:
        """The next span and how many were dropped before it; None on timeout."""
        try:
            span = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        dropped, self._dropped = self._dropped, 0
        return span, dropped

    def close(self) -> None:
        self.closed = True
        self._tap.unsubscribe(self)


class SpanTap:
    def __init__(self, queue_size: int = 1024, max_subscribers: int = 16) -> None:
        self._lock = threading.Lock()
        self._subs: tuple[Subscription, ...] = ()  # replaced whole, read without the lock
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self.active = False  # the pipeline's cheap check: is anyone listening?

    def subscribe(self, flt: TapFilter) -> Subscription:
        with self._lock:
            if len(self._subs) >= self.max_subscribers:
                raise RuntimeError(f"too many tail subscribers (limit {self.max_subscribers})")
            sub = Subscription(self, flt, self.queue_size)
            self._subs = (*self._subs, sub)
            self.active = True
            return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self.active = bool(self._subs)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, span: SpanSummary) -> None:
        for sub in self._subs:
            sub.offer(span)


def tap_observer(tap: SpanTap) -> Callable[[Call, Any], None]:
    """A Pipeline observer ``(call, span) -> None`` feeding ``tap`` from exported spans.

    ``span`` is the OpenTelemetry ReadableSpan built from the (redacted) call; when nobody tails,
    the observer returns after one attribute read.
    """

    def observe(call: Call, span: Any) -> None:
        if not tap.active:
            return
        ctx = span.get_span_context() if hasattr(span, "get_span_context") else span.context
        service = ""
        resource = getattr(span, "resource", None)
        if resource is not None:
            service = str(resource.attributes.get("service.name", ""))
        tap.publish(
            SpanSummary.from_call(
                call,
                trace_id=ctx.trace_id,
                span_id=ctx.span_id,
                service=service,
                start_unix_nano=span.start_time or 0,
            )
        )

    return observe
