"""SDK spans enriched with the wire: one span per call when an app has its own OpenTelemetry SDK.

The agent's receiver hands every ``ExportTraceServiceRequest`` an SDK sent to ``on_request``; the
pipeline hands every agent span to ``offer``. A pair is the same call when:

- client side: the SDK CLIENT span's id is the parent-id of the traceparent the agent saw on the
  outgoing request -- key ("C", trace id, that id);
- server side: the SDK SERVER span's trace id and parent span id are those of the traceparent on
  the incoming request -- key ("S", trace id, parent id);
- an incoming request without a traceparent (curl, a browser, a load balancer): the SDK's SERVER
  span is a root. Its peer port, method and path are the wire call's -- key ("R", port, hash of
  method and path) -- and it starts inside the agent's span of the call (checked: a keep-alive
  connection repeats a key). Agent spans of a process wait for such a twin only once one of its
  SDK spans was paired (or came after an agent span with its key): every other process's server
  spans leave at once, as before; the first requests of an SDK process stay duplicated.

A matched SDK span gains the wire attributes (``wire_attributes``: headers, bodies per policy,
peer, the process/container identity and kernel timings under ``hostagent.*``); the agent's span
is dropped, and agent spans that named it as parent (thread-linked children) are moved under the
SDK span. Whatever arrives first waits for the other: SDK spans at most ``hold_s`` (the SDK got
its answer at once: the wait is only before forwarding), agent spans ``hold_s``, or ``sdk_wait_s``
for processes seen exporting through the receiver (SDK batch processors export every few
seconds). Unmatched agent spans are emitted as before; unmatched SDK spans forwarded unchanged.

Held SDK data is bounded by span count and encoded bytes; past either, a request is forwarded at
once (counted ``sdk_hold_overflow``). Forwarding is protobuf to protobuf: the SDK's resource,
scope, events, links, status and unknown fields stay as sent; only attributes are added, and the
redaction policy runs over every string the SDK sent (name, attributes, event attributes, status
message, resource) before anything leaves.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from hostagent.model import Call, Role
from hostagent.traces.ids import parse_traceparent
from hostagent.traces.linking import EXPIRY_SLACK, respan

Key = tuple[str, int, int]
_WIRE_KEYS = frozenset({"http.request.body.size", "http.response.body.size", "network.peer.address",
                        "network.peer.port", "network.transport", "network.protocol.version"})
_WIRE_PREFIXES = ("http.request.header.", "http.response.header.", "hostagent.")
_RESOURCE_KEYS = ("service.name", "process.pid", "process.executable.name", "process.command",
                  "container.id", "container.name", "container.image.name", "systemd.unit")
# SDK client spans of these never carry a traceparent on the wire: holding them is only delay.
_UNMATCHABLE = ("db.system", "db.system.name", "messaging.system")


def wire_attributes(call: Call, span: ReadableSpan) -> dict[str, Any]:
    """What an SDK span gains from the agent's (already redacted) span of the same call."""
    out: dict[str, Any] = {}
    for key, value in (span.attributes or {}).items():
        if key in _WIRE_KEYS or key.startswith(_WIRE_PREFIXES):
            out[key] = value
    resource = span.resource.attributes if span.resource is not None else {}
    for key in _RESOURCE_KEYS:
        if key in resource:
            out["hostagent." + key] = resource[key]
    if span.start_time is not None and span.end_time is not None:
        out["hostagent.kernel.start_time_unix_nano"] = span.start_time
        out["hostagent.kernel.end_time_unix_nano"] = span.end_time
    if call.conn is not None:
        out["hostagent.kernel.tid"] = call.conn.tid
    return out


def any_value(value: Any) -> Optional[AnyValue]:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, (tuple, list)):
        items = [any_value(v) for v in value]
        out = AnyValue()
        out.array_value.values.extend(i for i in items if i is not None)
        return out
    return None


def add_attributes(span: PbSpan, attrs: Mapping[str, Any]) -> int:
    """Add ``attrs`` the span does not have yet (what the SDK set wins); returns how many."""
    have = {kv.key for kv in span.attributes}
    added = 0
    for key, value in attrs.items():
        if key in have:
            continue
        pb = any_value(value)
        if pb is not None:
            span.attributes.append(KeyValue(key=key, value=pb))
            added += 1
    return added


def sdk_key(span: PbSpan) -> Optional[Key]:
    if span.kind == PbSpan.SPAN_KIND_CLIENT and len(span.span_id) == 8:
        if any(kv.key in _UNMATCHABLE for kv in span.attributes):
            return None
        return ("C", int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"))
    if span.kind == PbSpan.SPAN_KIND_SERVER:
        if len(span.parent_span_id) == 8:
            return ("S", int.from_bytes(span.trace_id, "big"), int.from_bytes(span.parent_span_id, "big"))
        if not span.parent_span_id:
            return sdk_root_key(span)
    return None


def agent_key(call: Call, span: ReadableSpan) -> Optional[Key]:
    if call.traceparent is None or span.kind not in (SpanKind.CLIENT, SpanKind.SERVER):
        return None
    parsed = parse_traceparent(call.traceparent)
    if parsed is None:
        return None
    return ("C" if call.role == Role.CLIENT else "S", parsed[0], parsed[1])


# How far before the agent's span of a call (first request byte read) the SDK's root span may
# seem to start: the two clocks are converted apart (traces.clock). Consecutive requests on one
# connection are further apart than this, or the key does not tell them apart.
ROOT_SLACK_NS = 2_000_000
_PEER_PORT_KEYS = ("network.peer.port", "net.peer.port", "client.port")
_METHOD_KEYS = ("http.request.method", "http.method")


def root_key(port: int, method: str, path: str) -> Key:
    return ("R", port, hash((method, path)))


def _pb_first(span: PbSpan, keys: tuple[str, ...]) -> Any:
    values = {kv.key: kv.value for kv in span.attributes if kv.key in keys}
    for key in keys:
        value = values.get(key)
        if value is not None:
            which = value.WhichOneof("value")
            return getattr(value, which) if which in ("int_value", "string_value") else None
    return None


def sdk_root_key(span: PbSpan) -> Optional[Key]:
    """The key of an SDK root SERVER span (old and new HTTP conventions), None without its parts."""
    port = _pb_first(span, _PEER_PORT_KEYS)
    method = _pb_first(span, _METHOD_KEYS)
    path = _pb_first(span, ("url.path",))
    if path is None:
        target = _pb_first(span, ("http.target",))
        path = target.partition("?")[0] if isinstance(target, str) else None
    if not (isinstance(port, int) and port and isinstance(method, str) and isinstance(path, str) and path):
        return None
    return root_key(port, method, path)


def agent_root_key(call: Call, span: ReadableSpan) -> Optional[Key]:
    """The key of an agent HTTP SERVER span whose request carried no traceparent."""
    if call.traceparent is not None or call.role != Role.SERVER or span.kind != SpanKind.SERVER:
        return None
    attrs = span.attributes or {}
    port, method, path = attrs.get("network.peer.port"), attrs.get("http.request.method"), attrs.get("url.path")
    if not (isinstance(port, int) and port and isinstance(method, str) and isinstance(path, str) and path):
        return None
    return root_key(port, method, path)


def starts_within(pb: PbSpan, span: ReadableSpan) -> bool:
    """The SDK span starts while the agent's span of the call is open (a root key's check)."""
    start, end = span.start_time, span.end_time
    if start is None or end is None:
        return False
    return start - ROOT_SLACK_NS <= pb.start_time_unix_nano <= end


class _Request:
    __slots__ = ("deadline", "forwarded", "held", "pending", "request", "size")

    def __init__(self, request: ExportTraceServiceRequest, size: int, deadline: float) -> None:
        self.request, self.size, self.deadline = request, size, deadline
        self.pending = 0  # held spans still waiting for their agent span
        self.held = 0  # spans counted in the layer's held totals
        self.forwarded = False


class _Agent:
    __slots__ = ("call", "deadline", "dependents", "key", "span", "waiting")

    def __init__(self, call: Call, span: ReadableSpan, key: Key, deadline: float) -> None:
        self.call, self.span, self.key, self.deadline = call, span, key, deadline
        self.dependents: list[tuple[Call, ReadableSpan]] = []
        self.waiting = True


class SdkLayer:
    def __init__(
        self,
        emit: Callable[[Call, ReadableSpan], None],
        forward: Callable[[ExportTraceServiceRequest], None],
        hold_s: float = 1.5,
        sdk_wait_s: float = 6.0,
        max_held_spans: int = 20000,
        max_held_bytes: int = 32 << 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.forward = emit, forward
        self.hold_s, self.sdk_wait_s = hold_s, sdk_wait_s
        self.max_held_spans, self.max_held_bytes = max_held_spans, max_held_bytes
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sdk: dict[Key, tuple[_Request, PbSpan]] = {}
        self._agents: dict[Key, _Agent] = {}
        self._agent_by_span: dict[int, _Agent] = {}  # agent span id -> held agent span
        self._moved: OrderedDict[int, tuple[int, int]] = OrderedDict()  # dropped agent span id -> SDK ctx
        self._late: OrderedDict[Key, tuple[int, dict[str, Any]]] = OrderedDict()  # expired agent keys
        # Root keys of untraced server calls that left -> pid: apart from _late, so that a host's
        # untraced traffic does not push out the wire detail kept for late traced SDK spans.
        self._late_roots: OrderedDict[Key, int] = OrderedDict()
        self._sdk_pids: OrderedDict[int, float] = OrderedDict()
        self._timers: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._held_spans = 0
        self._held_bytes = 0

    # -- agent side (poll thread / linker) ----------------------------------------------------------
    def offer(self, call: Call, span: ReadableSpan) -> None:
        out: list[tuple[Call, ReadableSpan]] = []
        forwards: list[_Request] = []
        with self._lock:
            self._offer(call, span, out, forwards)
        self._flush_out(out, forwards)

    def _offer(self, call: Call, span: ReadableSpan, out: list, forwards: list[_Request]) -> None:
        key = agent_key(call, span)
        if key is None:
            key = self._root_wanted(call, span)
        if key is None:
            parent = span.parent
            if parent is not None:
                held = self._agent_by_span.get(parent.span_id)
                if held is not None:
                    held.dependents.append((call, span))
                    return
                moved = self._moved.get(parent.span_id)
                if moved is not None:
                    span = respan(span, moved[0], moved[1])
            out.append((call, span))
            return
        found = self._sdk.get(key)
        if found is not None and (key[0] != "R" or starts_within(found[1], span)):
            del self._sdk[key]
            req, pb = found
            self._match(call, span, pb, out)
            req.pending -= 1
            if req.pending == 0:
                forwards.append(req)
            return
        pid = call.conn.pid if call.conn is not None else 0
        wait = self.sdk_wait_s if pid in self._sdk_pids else self.hold_s
        agent = _Agent(call, span, key, self.clock() + wait)
        previous = self._agents.get(key)
        if previous is not None:  # same key twice (a retried request): let the first go
            self._expire_agent(previous, out)
        self._agents[key] = agent
        if span.context is not None:
            self._agent_by_span[span.context.span_id] = agent
        self._push_timer(agent.deadline, agent)

    def _root_wanted(self, call: Call, span: ReadableSpan) -> Optional[Key]:
        """The root key of an untraced server call when it is to wait for (or meets) its SDK
        twin; otherwise None, after noting its process for an SDK root span coming later."""
        key = agent_root_key(call, span)
        if key is None:
            return None
        pid = call.conn.pid if call.conn is not None else 0
        if key in self._sdk or pid in self._sdk_pids:
            return key
        self._note_root(key, pid)
        return None

    def _note_root(self, key: Key, pid: int) -> None:
        """Only who: a root key is not unique (a keep-alive connection repeats it), so an SDK span
        with it coming later learns that the pid has an SDK but takes no wire detail."""
        self._late_roots[key] = pid
        self._late_roots.move_to_end(key)
        if len(self._late_roots) > 8192:
            self._late_roots.popitem(last=False)

    def _match(self, call: Call, span: ReadableSpan, pb: PbSpan, out: list) -> None:
        add_attributes(pb, wire_attributes(call, span))
        self.counters["sdk_spans_enriched"] += 1
        self.counters["agent_spans_deduplicated"] += 1
        if call.conn is not None:
            self._sdk_pids[call.conn.pid] = self.clock()
            self._sdk_pids.move_to_end(call.conn.pid)
            if len(self._sdk_pids) > 4096:
                self._sdk_pids.popitem(last=False)
        ctx = span.context
        if ctx is not None:
            sdk_ctx = (int.from_bytes(pb.trace_id, "big"), int.from_bytes(pb.span_id, "big"))
            self._moved[ctx.span_id] = sdk_ctx
            if len(self._moved) > 8192:
                self._moved.popitem(last=False)

    def _expire_agent(self, agent: _Agent, out: list) -> None:
        if not agent.waiting:
            return
        agent.waiting = False
        self._agents.pop(agent.key, None)
        if agent.span.context is not None:
            self._agent_by_span.pop(agent.span.context.span_id, None)
        out.append((agent.call, agent.span))
        out.extend(agent.dependents)
        pid = agent.call.conn.pid if agent.call.conn is not None else 0
        if agent.key[0] == "R":
            self._note_root(agent.key, pid)
            return
        self._late[agent.key] = (pid, wire_attributes(agent.call, agent.span))
        if len(self._late) > 8192:
            self._late.popitem(last=False)

    # -- SDK side (receiver threads) ----------------------------------------------------------------
    def on_request(self, request: ExportTraceServiceRequest, size: int) -> None:
        out: list[tuple[Call, ReadableSpan]] = []
        forwards: list[_Request] = []
        with self._lock:
            req = _Request(request, size, self.clock() + self.hold_s)
            held: list[tuple[Key, PbSpan]] = []
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for pb in ss.spans:
                        key = sdk_key(pb)
                        if key is None:
                            continue
                        agent = self._agents.get(key)
                        if agent is not None and agent.waiting and (key[0] != "R" or starts_within(pb, agent.span)):
                            del self._agents[key]
                            self._take_agent(agent, pb, out)
                            continue
                        if key[0] == "R":
                            pid = self._late_roots.pop(key, None)
                            if pid is not None:  # its twin left: forwarded as sent, the pid learnt
                                self._sdk_pids[pid] = self.clock()
                                self.counters["sdk_spans_late"] += 1
                                continue
                        late = self._late.pop(key, None)
                        if late is not None:  # the agent's span already left: enrich, learn
                            add_attributes(pb, late[1])
                            self._sdk_pids[late[0]] = self.clock()
                            self.counters["sdk_spans_late"] += 1
                            continue
                        held.append((key, pb))
            overflow = (self._held_spans + len(held) > self.max_held_spans
                        or self._held_bytes + size > self.max_held_bytes)
            if held and overflow:
                self.counters["sdk_hold_overflow"] += 1
                held = []
            if held:
                req.pending = req.held = len(held)
                for key, pb in held:
                    self._sdk[key] = (req, pb)
                self._held_spans += len(held)
                self._held_bytes += size
                self._push_timer(req.deadline, req)
            else:
                forwards.append(req)
        self._flush_out(out, forwards)

    def _take_agent(self, agent: _Agent, pb: PbSpan, out: list) -> None:
        agent.waiting = False
        if agent.span.context is not None:
            self._agent_by_span.pop(agent.span.context.span_id, None)
        self._match(agent.call, agent.span, pb, out)
        trace_id, span_id = int.from_bytes(pb.trace_id, "big"), int.from_bytes(pb.span_id, "big")
        for call, span in agent.dependents:
            out.append((call, respan(span, trace_id, span_id)))

    # -- timers ---------------------------------------------------------------------------------------
    def _push_timer(self, deadline: float, item: Any) -> None:
        """Queue ``item``'s deadline. An agent span matched early, or a request forwarded early,
        stays in the heap until its deadline (up to ``sdk_wait_s``) and keeps its call, span or
        request alive: the heap is rebuilt without them once it holds more than twice what can
        still be live (waiting agent spans; held requests, each holding at least one held span)
        plus EXPIRY_SLACK, as the linker's deadline queue is."""
        timers = self._timers
        heapq.heappush(timers, (deadline, next(self._seq), item))
        if len(timers) > 2 * (len(self._agents) + self._held_spans) + EXPIRY_SLACK:
            live = [t for t in timers if (t[2].waiting if isinstance(t[2], _Agent) else not t[2].forwarded)]
            heapq.heapify(live)
            self._timers = live

    def sweep(self, now: Optional[float] = None, everything: bool = False) -> None:
        now = self.clock() if now is None else now
        out: list[tuple[Call, ReadableSpan]] = []
        forwards: list[_Request] = []
        with self._lock:
            timers = self._timers
            while timers and (everything or timers[0][0] <= now):
                _, _, item = heapq.heappop(timers)
                if isinstance(item, _Agent):
                    if item.waiting:
                        self.counters["agent_spans_unmatched"] += 1
                    self._expire_agent(item, out)
                elif not item.forwarded:
                    self.counters["sdk_requests_hold_expired"] += 1
                    forwards.append(item)
        self._flush_out(out, forwards)

    def _flush_out(self, out: Iterable[tuple[Call, ReadableSpan]], forwards: list[_Request]) -> None:
        for call, span in out:
            self.emit(call, span)
        for req in forwards:
            with self._lock:
                if req.forwarded:
                    continue
                req.forwarded = True
                if req.held:
                    self._release(req)
            self.forward(req.request)

    def _release(self, req: _Request) -> None:
        """Forget the SDK spans of ``req`` still waiting (it is being forwarded)."""
        for rs in req.request.resource_spans:
            for ss in rs.scope_spans:
                for pb in ss.spans:
                    key = sdk_key(pb)
                    if key is not None and self._sdk.get(key, (None,))[0] is req:
                        del self._sdk[key]
                        self.counters["sdk_spans_unmatched"] += 1
        self._held_spans -= req.held
        self._held_bytes -= req.size
        req.held = req.pending = 0

    @property
    def held(self) -> dict[str, int]:
        return {"sdk_spans": self._held_spans, "sdk_bytes": self._held_bytes, "agent_spans": len(self._agents)}


# -- redaction of what the SDK sent -------------------------------------------------------------------
def _strings(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        which = kv.value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = kv.value.string_value
        elif which == "array_value":
            values = kv.value.array_value.values
            if values and all(v.WhichOneof("value") == "string_value" for v in values):
                out[kv.key] = tuple(v.string_value for v in values)
    return out


def _write_back(pairs: Iterable[KeyValue], before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
    for kv in pairs:
        new = after.get(kv.key)
        if new is None or new == before.get(kv.key):
            continue
        pb = any_value(new)
        if pb is not None:
            kv.value.CopyFrom(pb)


def redact_request(request: ExportTraceServiceRequest, redactor: Any) -> dict[str, int]:
    """Run ``redactor`` (hostagent.policy.redaction.Redactor) over every string the SDK sent, in
    place: resource and span attributes, span names, status messages, event names and attributes.
    Uses the Redactor's public ``apply`` on a Call made of those strings, so header attributes
    get the same sensitive-header treatment as the agent's own spans. Returns counts by type."""
    counts: Counter[str] = Counter()
    if not getattr(redactor, "active", False):
        return {}

    def run(name: str, message: str, pairs: Any, mark: bool = True) -> tuple[str, str]:
        before = _strings(pairs)
        probe = Call(protocol="otlp", role=Role.UNKNOWN, start_ns=0, end_ns=0, name=name,
                     attributes=dict(before), status_message=message)
        result = redactor.apply(probe)
        if result.counts:
            counts.update(result.counts)
            _write_back(pairs, before, result.call.attributes)
            if mark and "hostagent.pii.types" in result.call.attributes:
                pairs.append(KeyValue(key="hostagent.pii.types",
                                      value=any_value(result.call.attributes["hostagent.pii.types"])))
        return result.call.name, result.call.status_message

    for rs in request.resource_spans:
        run("", "", rs.resource.attributes, mark=False)
        for ss in rs.scope_spans:
            for span in ss.spans:
                name, message = run(span.name, span.status.message, span.attributes)
                if name != span.name:
                    span.name = name
                if message != span.status.message:
                    span.status.message = message
                for event in span.events:
                    name, _ = run(event.name, "", event.attributes, mark=False)
                    if name != event.name:
                        event.name = name
    return dict(counts)
