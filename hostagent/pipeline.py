"""The stages between a kernel event and the export queue, run on the poll thread.

    CaptureEvent -> ConnectionTracker (reassembly, protocol parsers) -> Call
        -> identity (service) -> wire detail -> RED metrics -> redaction -> SpanBuilder
        -> trace linking -> sampling -> observers (tap)
        -> export queue (bounded: the one hand-off to another thread)

Everything here runs on the ring-buffer poll thread (the linker's held spans leave from its sweeper
thread too) and must never block: the export queue drops and counts when full. Every drop has a
named counter so ``hostagentctl status`` shows it. Settings are read once per call from the
holder's immutable snapshot (no lock); what is compiled from a snapshot (redactor, sampler) is
looked up again only when the snapshot changes.

Calls that come from the tracker belong to the pipeline (the parser that built them kept no
reference, and each parser builds an attributes dict per Call): their attributes dict is written in
place and their spent raw headers and bodies emptied (``model.spend_wire``), instead of a
``dataclasses.replace`` per stage (~17 us each on this machine) or a copy of the dict. Calls handed
in through ``on_call`` are never modified.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Optional, Protocol

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.identity.listen_events import ListenEvents
from hostagent.model import Call, CaptureEvent, EventKind, Role, spend_wire
from hostagent.policy.redaction import PiiCounters, redactor_for
from hostagent.policy.sampling import Pending, sampler_for
from hostagent.policy.telemetry import TelemetryConnections
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.wire import add_wire_detail, capture_for

log = logging.getLogger(__name__)

# Call.protocol -> the probe name that enables it ("grpc" is decoded by the http2 probe).
PROBE_OF_PROTOCOL = {
    "http": "http", "http2": "http2", "grpc": "http2", "postgresql": "postgres",
    "mysql": "mysql", "mariadb": "mysql", "redis": "redis", "dns": "dns",
}


class Tracker(Protocol):
    def handle(self, event: CaptureEvent) -> list[Call]: ...


class SpanSink(Protocol):
    def enqueue(self, span: ReadableSpan) -> bool: ...


Observer = Callable[[Call, ReadableSpan], None]
# Enum members read once: ``EventKind.DATA`` is a class attribute lookup through the enum's
# metaclass (~90 ns), paid per event otherwise.
_DATA, _EXEC, _EXIT, _FORK = EventKind.DATA, EventKind.EXEC, EventKind.EXIT, EventKind.FORK
_CGROUP = EventKind.CGROUP
_CONNECT, _CLOSE = EventKind.CONNECT, EventKind.CLOSE
_CLIENT, _SERVER = Role.CLIENT, Role.SERVER


class Pipeline:
    def __init__(
        self,
        settings: SettingsHolder,
        tracker: Tracker,
        build_span: Callable[[Call], ReadableSpan],
        sink: SpanSink,
        *,
        identity: Optional[Any] = None,
        peers: Optional[Any] = None,
        metrics: Optional[Callable[[Call, Optional[str]], Any]] = None,
        redaction_key: bytes = b"",
        pii_counters: Optional[PiiCounters] = None,
        observers: tuple[Observer, ...] = (),
        linker: Optional[Any] = None,
        own: Optional[Any] = None,
        trace_telemetry: bool = False,
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.build_span = build_span
        self.sink = sink
        self.identity = identity
        # identity.service.ServiceCache.recent: pid -> live entry, read without its lock or a call
        # (PidMaps keeps it a subset of the live map); None for an identity without one.
        self._recent: Optional[dict[int, Any]] = getattr(identity, "recent", None)
        self.peers = peers  # identity.peers.PeerResolver: peer.service for local servers
        self.metrics = metrics  # RED metrics (call, service.name or None): every call counts, sampled or not
        self.redaction_key = redaction_key
        self.pii = pii_counters or PiiCounters()
        self.observers: list[Observer] = list(observers)
        # hostagent.receiver.wiring.Layering: trace linking and SDK enrichment before the queue;
        # each span it emits passes through after_link (sampling, observers) first
        self.linker = linker
        # identity.own_sockets.OwnConnections: a local collector's side of the agent's own exports
        self.own = own
        self.own_traffic = 0  # such server calls, left out: not the apps' traffic, not a loss
        self.trace_telemetry = trace_telemetry  # [capture] telemetry_calls (reload sets it)
        self.telemetry_calls = 0  # exports of telemetry, left out while trace_telemetry is off
        self.telemetry = TelemetryConnections()  # and the connections that carried them
        if linker is not None:
            linker.set_gate(self.after_link)
        self.events = 0
        self.calls = 0
        self.spans = 0
        self.sampled_out = 0
        self.dropped: Counter[str] = Counter()  # cause -> count
        self._errors_logged = 0
        # What LISTEN events (and the process events after them) teach the listener table
        self.listens: Optional[ListenEvents] = (
            ListenEvents(peers.listeners, identity) if peers is not None and identity is not None else None)
        # (snapshot, redactor, sampler, sampler.may_drop): recompiled when the snapshot changes.
        self._policy: tuple[Any, ...] = (None, None, None, False)

    def on_event(self, event: CaptureEvent) -> None:
        """The ring-buffer callback. Exceptions are contained: one bad event never stops capture."""
        self.events += 1
        kind = event.kind
        # DATA: nearly every event; CONNECT and CLOSE (a connection's, with a new one per request)
        # teach identity and the listener table nothing (ListenEvents.IGNORED)
        if kind != _DATA and kind != _CONNECT and kind != _CLOSE:
            self._observe(event)
        try:
            for call in self.tracker.handle(event):
                self._handle(call, True)
        except Exception:  # a bug must cost one event, not the agent
            self._error(event)

    def _observe(self, event: CaptureEvent) -> None:
        """What identity and the listener table learn from a lifecycle event. Apart from the
        tracker's try: a bug here must not also cost the tracker a connect, accept or close."""
        try:
            if self.identity is not None:
                kind = event.kind
                if kind == _EXEC:
                    self.identity.on_exec(event.pid, event.comm, exe=event.data.decode("utf-8", "replace"),
                                          cgroup_id=event.cgroup_id, parent=event.size)
                elif kind == _EXIT:
                    self.identity.on_exit(event.pid)
                elif kind == _FORK:
                    self.identity.on_fork(event.pid, event.size)  # size carries the parent's tgid
                elif kind == _CGROUP:
                    self.identity.on_cgroup(event.size, event.data.decode("utf-8", "replace"))
            if self.listens is not None:
                self.listens.on_event(event)  # after on_fork: a listener's child is read then
        except Exception:
            self._error(event)

    def _error(self, event: CaptureEvent) -> None:
        self.dropped["pipeline_error"] += 1
        if self._errors_logged < 20:
            self._errors_logged += 1
            log.exception("pipeline error on %s event of pid %d", event.kind.name, event.pid)

    def on_call(self, call: Call) -> None:
        """A Call from outside the tracker (e.g. connections finished at shutdown): left unmodified."""
        self._handle(call, False)

    def _policies(self, current: RuntimeSettings) -> tuple[Any, ...]:
        policy = self._policy
        if policy[0] is not current:
            sampler = sampler_for(current.sampling)
            policy = (current, redactor_for(current.redaction, self.redaction_key), sampler, sampler.may_drop)
            self._policy = policy
        return policy

    def _handle(self, call: Call, owned: bool) -> None:
        self.calls += 1
        current = self.settings.current
        if PROBE_OF_PROTOCOL.get(call.protocol, call.protocol) not in current.probes:
            self.dropped["probe_disabled"] += 1
            return
        conn = call.conn
        own = self.own
        if own is not None and conn is not None and (
                _from_agent(own, conn) if call.role == _SERVER else conn.pid in own.pids):
            # a local collector's side of the agent's exports, or the export process's own calls
            # (the kernel skips only the agent's own pid)
            self.own_traffic += 1
            return
        if not self.trace_telemetry and self.telemetry.is_telemetry(call):
            self.telemetry_calls += 1
            return
        policy = self._policy
        if policy[0] is not current:
            policy = self._policies(current)
        _, redactor, sampler, may_drop = policy
        service = None
        # An owned Call's attributes are the pipeline's too (each parser builds a dict per Call):
        # written in place. One copy left per span, the SpanBuilder's (the span's own attributes).
        attrs = call.attributes if owned else call.attributes.copy()
        if self.identity is not None and conn is not None:
            recent = self._recent
            entry = recent.get(conn.pid) if recent is not None else None
            service = (entry.service if entry is not None
                       else self.identity.service_for(conn.pid, conn.comm, conn.cgroup_id))
            if self.peers is not None and call.role == _CLIENT and conn.peer is not None:
                peer = self.peers.attributes_for(conn.peer.address, conn.peer.port, conn.pid)
                if peer:
                    attrs.update(peer)
        capture = current.capture
        if capture.overrides:
            capture = capture_for(capture, service.name if service is not None else "", call.protocol)
        # Before redaction: everything the wire adds is redacted like the rest of the Call.
        add_wire_detail(call, capture, not current.redaction.pii_detection, attrs)
        # The raw headers and bodies are spent: what capture keeps of them is in attrs now. Left on
        # the Call, redaction scanned them too, so a span whose body was not exported (bodies off)
        # still said hostagent.pii.types=secret_param, and status counted an exported body's finding twice.
        spent = bool(call.request_headers or call.response_headers or call.request_body or call.response_body)
        if owned:
            if spent:
                spend_wire(call)
        elif spent:
            call = replace(call, attributes=attrs, request_headers=(), response_headers=(), request_body=b"",
                           response_body=b"")
        else:
            call = replace(call, attributes=attrs)
        if self.metrics is not None:
            self.metrics(call, service.name if service is not None else None)
        if redactor.active and not redactor.is_clean(call):  # known clean: nothing to build
            redacted = redactor.apply(call)
            call = redacted.call
            self.pii.add(redacted.counts)
        span = self.build_span(call)
        pending: Optional[Pending] = None
        if may_drop:
            parent = span.parent
            pending = Pending(
                sampler,
                service=service.name if service is not None else None,
                protocol=call.protocol,
                is_error=call.error_type is not None,
                duration_ns=call.end_ns - call.start_ns,
                wire_parent_sampled=bool(parent.trace_flags & 1) if parent is not None and call.role == _SERVER
                else None,
            )
        if self.linker is not None:
            # Sampling waits for the link: the trace id is final only then (see Pending).
            self.linker.offer(call, span, pending)  # holds, links, then after_link, then enqueues
        elif self.after_link(call, span, pending, None):
            self.sink.enqueue(span)  # the queue counts what it drops when full

    def after_link(self, call: Call, span: ReadableSpan, pending: Optional[Pending],
                   parent_kept: Optional[bool]) -> bool:
        """Sampling and the observers, once ``span``'s trace is final; True to export it. The
        linker calls it for each span it emits, a parent before its children (``parent_kept``:
        the local parent's decision, None for a root)."""
        if pending is not None:
            context = span.context
            if not pending.decide(context.trace_id if context is not None else 0, parent_kept).sampled:
                self.sampled_out += 1  # a decision, not a loss: counted apart from drops
                return False
        self.spans += 1
        for observe in self.observers:
            observe(call, span)
        return True


class SpanOnly:
    """``emit(call, span)`` for a sink that takes the span alone (the export queue's ``put``): the
    trace linker's emit when nothing else is layered on it. Here because this module is compiled:
    the same lambda in the interpreted wiring was a Python call per span."""

    def __init__(self, enqueue: Callable[[ReadableSpan], Any]) -> None:
        self.enqueue = enqueue

    def __call__(self, call: Call, span: ReadableSpan) -> None:
        self.enqueue(span)


def _from_agent(own: Any, conn: Any) -> bool:
    """The agent's own export reaching a collector on this host: its spans would be exported in
    turn, each export making the next one's (a loop, even on an idle host)."""
    peer, local = conn.peer, conn.local
    return peer is not None and local is not None and bool(own.is_own(peer.address, peer.port, local.port))
