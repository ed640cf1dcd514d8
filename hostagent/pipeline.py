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
from typing import Any, Final, Optional, Protocol

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.capture.tracker import ConnectionTracker
from hostagent.export.queue import ExportQueue
from hostagent.identity.listen_events import ListenEvents
from hostagent.identity.own_sockets import OwnConnections
from hostagent.identity.peers import PeerResolver
from hostagent.metrics.red import RedMetrics
from hostagent.model import Call, CaptureEvent, Connection, EventKind, Role, spend_wire
from hostagent.policy.redaction import PiiCounters, Redactor, redactor_for
from hostagent.policy.sampling import Pending, sampler_for
from hostagent.policy.telemetry import TelemetryConnections
from hostagent.settings import CaptureSettings, RuntimeSettings, SettingsHolder
from hostagent.traces.linking import LinkEmit, LinkGate, LocalLinker, method_owner
from hostagent.traces.spans import SpanBuilder
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
# metaclass (~90 ns), paid per event otherwise. Final: compiled, any other module global is a dict
# lookup per use.
_DATA: Final = EventKind.DATA
_EXEC: Final = EventKind.EXEC
_EXIT: Final = EventKind.EXIT
_FORK: Final = EventKind.FORK
_CGROUP: Final = EventKind.CGROUP
_CONNECT: Final = EventKind.CONNECT
_CLOSE: Final = EventKind.CLOSE
_CLIENT: Final = Role.CLIENT
_SERVER: Final = Role.SERVER
_ENABLED_MAX: Final = 256  # protocol names remembered per snapshot (a handful exist)


class Policy:
    """What one settings snapshot decides per call, in fields this compiled class reads natively
    (a frozen dataclass's field, or an object typed Any, is a generic attribute read per use).
    Built when the snapshot changes."""

    def __init__(self, current: RuntimeSettings, redaction_key: bytes) -> None:
        self.current = current
        self.probes: frozenset[str] = current.probes
        self.enabled: dict[str, bool] = {}  # Call.protocol -> its probe is enabled
        self.capture: CaptureSettings = current.capture
        self.overrides = bool(current.capture.overrides)
        self.mask_sensitive = not current.redaction.pii_detection
        self.redactor: Redactor = redactor_for(current.redaction, redaction_key)
        self.redacting: bool = self.redactor.active
        self.sampler = sampler_for(current.sampling)
        self.may_drop: bool = self.sampler.may_drop

    def protocol_enabled(self, protocol: str) -> bool:
        enabled = self.enabled.get(protocol)
        if enabled is None:
            enabled = PROBE_OF_PROTOCOL.get(protocol, protocol) in self.probes
            if len(self.enabled) >= _ENABLED_MAX:
                self.enabled.clear()
            self.enabled[protocol] = enabled
        return enabled


class Pipeline(LinkGate):
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
        # The same objects typed as their compiled classes, when they are (None otherwise): read
        # and called natively per call instead of through generic attribute reads (see Policy).
        self._tracker: Optional[ConnectionTracker] = tracker if isinstance(tracker, ConnectionTracker) else None
        self._builder: Optional[SpanBuilder] = method_owner(build_span, "build", SpanBuilder)
        self._red: Optional[RedMetrics] = (
            method_owner(metrics, "record", RedMetrics) if metrics is not None else None)
        self._peers: Optional[PeerResolver] = peers if isinstance(peers, PeerResolver) else None
        self._own: Optional[OwnConnections] = own if isinstance(own, OwnConnections) else None
        # the trace linker behind ``linker.offer`` (receiver.wiring.Layering's is the linker's own)
        self._linker: Optional[LocalLinker] = (
            method_owner(getattr(linker, "offer", None), "offer", LocalLinker) if linker is not None else None)
        # identity.service.ServiceCache.recent: pid -> live entry, read without its lock or a call
        # (PidMaps keeps it a subset of the live map); None for an identity without one.
        self._recent: Optional[dict[int, Any]] = getattr(identity, "recent", None)
        self.peers = peers  # identity.peers.PeerResolver: peer.service for local servers
        self.metrics = metrics  # RED metrics (call, service.name or None): every call counts, sampled or not
        self.redaction_key = redaction_key
        self.pii = pii_counters or PiiCounters()
        self.observers: list[Observer] = list(observers)
        # (switch, observer): called only while ``switch.active`` is true (add_observer)
        self._switched: list[tuple[Any, Observer]] = []
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
        # recompiled when the snapshot changes
        self._policy: Policy = Policy(settings.current, redaction_key)

    def on_event(self, event: CaptureEvent) -> None:
        """The ring-buffer callback. Exceptions are contained: one bad event never stops capture."""
        self.events += 1
        kind = event.kind
        # DATA: nearly every event; CONNECT and CLOSE (a connection's, with a new one per request)
        # teach identity and the listener table nothing (ListenEvents.IGNORED)
        if kind is not _DATA and kind is not _CONNECT and kind is not _CLOSE:
            self._observe(event)
        try:
            tracker = self._tracker
            for call in tracker.handle(event) if tracker is not None else self.tracker.handle(event):
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

    def _handle(self, call: Call, owned: bool) -> None:
        self.calls += 1
        current = self.settings.current
        policy = self._policy
        if policy.current is not current:
            policy = self._policy = Policy(current, self.redaction_key)
        if not policy.protocol_enabled(call.protocol):
            self.dropped["probe_disabled"] += 1
            return
        conn = call.conn
        native_own = self._own
        own = self.own
        if conn is not None and (
                (_from_agent(native_own, conn) if call.role is _SERVER else conn.pid in native_own.pids)
                if native_own is not None else
                own is not None and (_from_any(own, conn) if call.role is _SERVER else conn.pid in own.pids)):
            # a local collector's side of the agent's exports, or the export process's own calls
            # (the kernel skips only the agent's own pid)
            self.own_traffic += 1
            return
        if not self.trace_telemetry and self.telemetry.is_telemetry(call):
            self.telemetry_calls += 1
            return
        service = None
        name: Optional[str] = None  # service.name
        # An owned Call's attributes are the pipeline's too (each parser builds a dict per Call):
        # written in place. One copy left per span, the SpanBuilder's (the span's own attributes).
        attrs = call.attributes if owned else call.attributes.copy()
        if self.identity is not None and conn is not None:
            recent = self._recent
            entry = recent.get(conn.pid) if recent is not None else None
            service = (entry.service if entry is not None
                       else self.identity.service_for(conn.pid, conn.comm, conn.cgroup_id))
            name = service.name if service is not None else None
            if call.role is _CLIENT and conn.peer is not None:
                peers = self._peers
                peer: Optional[dict[str, str]] = None
                if peers is not None:
                    peer = peers.attributes_for(conn.peer.address, conn.peer.port, conn.pid)
                elif self.peers is not None:
                    peer = self.peers.attributes_for(conn.peer.address, conn.peer.port, conn.pid)
                if peer:
                    attrs.update(peer)
        capture = policy.capture
        if policy.overrides:
            capture = capture_for(capture, name if name is not None else "", call.protocol)
        # Before redaction: everything the wire adds is redacted like the rest of the Call.
        add_wire_detail(call, capture, policy.mask_sensitive, attrs)
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
        red = self._red
        if red is not None:
            red.record(call, name)
        elif self.metrics is not None:
            self.metrics(call, name)
        if policy.redacting:
            redactor = policy.redactor
            if not redactor.is_clean(call):  # known clean: nothing to build
                redacted = redactor.apply(call)
                call = redacted.call
                self.pii.add(redacted.counts)
        builder = self._builder
        span = builder.build(call) if builder is not None else self.build_span(call)
        pending: Optional[Pending] = None
        if policy.may_drop:
            parent = span.parent
            pending = Pending(
                policy.sampler,
                service=name,
                protocol=call.protocol,
                is_error=call.error_type is not None,
                duration_ns=call.end_ns - call.start_ns,
                wire_parent_sampled=bool(parent.trace_flags & 1) if parent is not None and call.role is _SERVER
                else None,
            )
        local = self._linker
        if local is not None:
            local.offer(call, span, pending)  # as below, called natively
        elif self.linker is not None:
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
        for switch, observe in self._switched:
            if switch.active:
                observe(call, span)
        return True

    def add_observer(self, observe: Observer, switch: Optional[Any] = None) -> None:
        """``observe(call, span)`` for every span kept (after sampling); with ``switch``, only while
        ``switch.active`` is true (hostagent.admin.tap.SpanTap: while someone tails). The switch is
        read here: a tap nobody tails costs an attribute read per span, not a Python call."""
        if switch is None:
            self.observers.append(observe)
        else:
            self._switched.append((switch, observe))


class SpanOnly(LinkEmit):
    """``emit(call, span)`` for a sink that takes the span alone (the export queue's ``put``): the
    trace linker's emit when nothing else is layered on it. Here because this module is compiled:
    the same lambda in the interpreted wiring was a Python call per span."""

    def __init__(self, enqueue: Callable[[ReadableSpan], Any]) -> None:
        self.enqueue = enqueue
        # the export queue behind ``enqueue`` when it is its own ``put``: called natively
        self._queue: Optional[ExportQueue] = method_owner(enqueue, "put", ExportQueue)

    def emit_span(self, call: Call, span: ReadableSpan) -> None:
        """What the linker calls natively (LinkEmit); calling the object is the same."""
        queue = self._queue
        if queue is not None:
            queue.put(span)
        else:
            self.enqueue(span)


def _from_agent(own: OwnConnections, conn: Connection) -> bool:
    """The agent's own export reaching a collector on this host: its spans would be exported in
    turn, each export making the next one's (a loop, even on an idle host)."""
    peer, local = conn.peer, conn.local
    return peer is not None and local is not None and own.is_own(peer.address, peer.port, local.port)


def _from_any(own: Any, conn: Connection) -> bool:
    """``_from_agent`` for an ``own`` that is not an OwnConnections (tests' stand-ins)."""
    peer, local = conn.peer, conn.local
    return peer is not None and local is not None and bool(own.is_own(peer.address, peer.port, local.port))
