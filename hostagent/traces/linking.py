"""Whole traces without any SDK, on one host: parents the wire alone can justify.

Two links, both for calls that carry no ``traceparent`` (a traceparent is always authoritative):

1. Thread-per-request: a CLIENT call made by thread T of process P while T was serving a request
   (P's SERVER call on T started before it and ended after it) is that server span's child.
   The server call completes after its client calls (it answers last), so client calls of a
   process that serves are held (``hold_s``) until the enclosing server call arrives.
   Event loops serve many requests on one thread: a process whose server calls overlap on one
   thread is marked as such and never thread-linked again (ambiguous, so no link rather than a
   wrong one). The first overlap can only be seen once both calls exist; see the tests for what
   that costs.
2. Both ends on this host: a SERVER call whose peer is local is the child of the CLIENT call that
   sent it -- same server port, method and path, and the server's request/response inside the
   client's (kernel timestamps of one clock, ``TOLERANCE_NS`` for the syscall exit race). Only a
   single candidate links; two look-alike requests in flight at once link neither. Where both
   ends know the connection's two ports (the client's own port from the kernel, the server's
   peer), candidates are looked for on that very connection only: look-alike requests of other
   connections (16 keep-alive connections of a load generator) are then neither ambiguous nor
   scanned; a call whose connection is not known in full is matched by server port as above.
   On one connection, HTTP/2 calls name their stream: the same stream id at both ends is the same
   exchange, so a gRPC channel's concurrent look-alike calls each link to their own client, and a
   call one end decoded without its :path (HPACK table partly known) still links.
   The server side completes first (it answers before the client reads), so local-peer server
   spans are held until their client arrives.

Trace ids flow from the root down: a chain curl -> A -> B completes bottom-up (B's server span
first, curl's client span last), so linked spans wait in a tree until its root is known (a span
with no possible parent, or one whose hold ran out), then the whole tree is emitted with the
root's trace id. Everything is bounded: at most ``max_held`` spans wait; past that a span is
emitted as it is, and counted.

Sampling waits for the link: each span leaves through ``gate`` (the pipeline's sampling and
observers) once its trace id is final, a parent before its children, so a linked tree is kept or
dropped whole (policy.sampling.Pending).

Runs on the poll thread (``offer``) and the sweeper thread (``sweep``), under one lock; ``gate``
and ``emit`` are called outside it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Optional

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.model import Call, Role
from hostagent.policy.sampling import Pending
from hostagent.traces.record import SpanRecord
from hostagent.traces.sdk_records import new_context

MAX_BUCKET: Final = 64  # spans waiting per (port, method, path) or per thread: scans stay short under load
# Spans linked before their hold ran out leave their bucket at once but stay in the deadline queue
# (FIFO, cheap to pop only at its head) until the deadline: the queue is rebuilt without them once
# it holds this many more than twice the waiting ones. Without it a 1.5 s hold kept every span linked
# in the last 1.5 s alive, call and all: ~40k spans and ~100 MiB at nginx's 30k req/s.
EXPIRY_SLACK: Final = 1024
RECENT_ON: Final = 16  # a connection's recent client calls kept for a server call still to come
RECENT: Final = 64  # a server port's, for client calls whose connection is not known in full
TOLERANCE_NS: Final = 2_000_000  # a reader can return from read() before the writer returns from write()
LINKED_PROTOCOLS: Final = frozenset({"http", "http2", "grpc"})
Emit = Callable[[Call, ReadableSpan], None]
# (call, span with its final ids, the call's sampling inputs, the local parent's answer or None for
# a root) -> export it? The pipeline's sampling and observers (Pipeline.after_link).
Gate = Callable[[Call, ReadableSpan, Any, Optional[bool]], bool]
# Enum members read once (compiled, ``Role.SERVER`` is a generic attribute read per use; Final: a
# constant, not a module dict lookup) and compared by identity, not ``==``.
_SERVER: Final = Role.SERVER
_UNKNOWN: Final = Role.UNKNOWN


def keep_all(call: Call, span: ReadableSpan, pending: Any, parent_kept: Optional[bool]) -> bool:
    return True


class LinkGate:
    """A gate the linker calls natively: ``set_gate(x.after_link)`` with ``x`` one of these (the
    pipeline) is a direct call per span, not a bound method object's (boxing, argument parsing)."""

    def after_link(self, call: Call, span: ReadableSpan, pending: Optional[Pending],
                   parent_kept: Optional[bool]) -> bool:
        return True


class LinkEmit:
    """An emit the linker calls natively (pipeline.SpanOnly): ``emit_span`` instead of a generic
    call of the object."""

    def emit_span(self, call: Call, span: ReadableSpan) -> None:
        pass

    def __call__(self, call: Call, span: ReadableSpan) -> None:
        self.emit_span(call, span)


def method_owner(method: Any, name: str, cls: type) -> Any:
    """The instance of ``cls`` whose method ``name`` is ``method`` (the bound method itself, so a
    call on the instance is the same call), else None. Compiled code calls a native class's method
    directly; through a bound method object it boxes the arguments and parses them again."""
    owner = getattr(method, "__self__", None)
    return owner if isinstance(owner, cls) and getattr(owner, name) == method else None


def respan(span: ReadableSpan, trace_id: int, parent_span_id: int) -> ReadableSpan:
    """``span`` moved into ``trace_id`` under ``parent_span_id`` (its own span id kept), in place:
    only spans not yet handed to the exporter are moved (held in a link tree, or in the SDK
    layering's wait), and a new ReadableSpan cost ~3x the two contexts. A SpanRecord (the agent's
    own) changes two ints; its contexts are made again only if asked for."""
    record: Any = span
    if isinstance(record, SpanRecord):
        record.move(trace_id, parent_span_id)
        return span
    ctx = span.context
    assert ctx is not None
    flags, state = ctx.trace_flags, ctx.trace_state
    span._context = new_context(trace_id, ctx.span_id, False, flags, state)
    span._parent = new_context(trace_id, parent_span_id, False, flags, state)
    return span


def is_local_address(address: str) -> bool:
    # IPv4-mapped peers arrive in their IPv4 form (hostagent.probes.events)
    return address.startswith("127.") or address == "::1"


# (client port, server port) of a loopback connection as one int, client port << 16 | server port:
# a dict key that is hashed and compared natively, where a tuple of two ints was allocated, hashed
# element by element and compared through rich comparisons per lookup (several per span).
ConnKey = int


def conn_key(call: Call) -> Optional[ConnKey]:
    """The connection a local call travelled on, the same from both ends; None when not known in
    full (a client whose own port the kernel did not report)."""
    conn = call.conn
    if conn is None or conn.local is None or conn.peer is None or not conn.local.port or not conn.peer.port:
        return None
    if call.role is _SERVER:
        return conn.peer.port << 16 | conn.local.port
    return conn.local.port << 16 | conn.peer.port


def thread_key(pid: int, tid: int) -> int:
    """(pid, tid) as one int key (tids are below 2**22, pid_max): see ConnKey."""
    return pid << 32 | tid


class Node:
    __slots__ = ("call", "children", "deadline", "done", "end", "home", "home_key", "kept", "parent", "pending",
                 "request", "span", "span_id", "start", "stream", "trace_id", "waiting")

    def __init__(self, call: Call, span: ReadableSpan, deadline: float, pending: Any = None) -> None:
        # call, span and pending are None once emitted (``release``)
        self.call: Optional[Call] = call
        self.span: Optional[ReadableSpan] = span
        self.deadline = deadline
        self.pending = pending  # the call's sampling inputs (policy.sampling.Pending), for the gate
        self.kept: Optional[bool] = None  # the gate's answer, once emitted
        # Read once here: every held span is compared with many others under load (look-alike
        # requests of a benchmark or a health check hit the same buckets).
        self.start, self.end, self.stream = call.start_ns, call.end_ns, call.stream_id
        a = call.attributes
        self.request = (a.get("http.request.method"), a.get("url.path"), a.get("url.query"), a.get("rpc.method"),
                        a.get("rpc.service"))
        self.parent: Optional[Node] = None
        self.children: Optional[list[Node]] = None  # made by the first adoption (most nodes have none)
        self.done = False  # emitted; span/trace_id are final
        self.waiting = False
        # while waiting: the table and key of the bucket it waits in (typed: a dict's get and pop are native)
        self.home: Optional[dict[Any, list[Node]]] = None
        self.home_key: Any = None
        record: Any = span
        if isinstance(record, SpanRecord):  # the ints themselves, no SpanContext made
            self.trace_id, self.span_id = record.trace_id, record.span_id
        else:
            ctx = span.context
            self.trace_id = ctx.trace_id if ctx is not None else 0
            self.span_id = ctx.span_id if ctx is not None else 0

    def release(self) -> None:
        """Emitted: what a later call can still ask of it (its ids, times, request, the gate's
        answer) stays; its call, span and parent go. A client call stays in its connection's
        recent calls after it left (a server call may come after it): with a new connection per
        request (Flask under gunicorn) 4,096 connections' calls and spans stayed alive, and every
        collection of the garbage collector walked them (~35k of the ~50k young objects)."""
        self.call = None
        self.span = None
        self.pending = None
        self.parent = None


def _second(item: tuple[int, int]) -> int:
    return item[1]


def _request_of(call: Call) -> tuple[Any, Any]:
    a = call.attributes
    return a.get("http.request.method"), a.get("url.path") or a.get("rpc.method")


def _same_exchange(a: Node, b: Node, one_connection: bool) -> bool:
    """Whether two calls in each other's time are one exchange. On one connection two calls that
    both name their HTTP/2 stream are one exchange exactly when the ids are equal, whatever each
    end could decode of the headers: an end whose HPACK table became partly known (big concurrent
    requests went by beyond the captured bytes) has no :path, so no method, while the other end
    has them, and the request compare alone left every later call of that channel unlinked.
    Stream ids only tell calls of one connection apart: every channel's first call is stream 1."""
    if one_connection and a.stream != 0 and b.stream != 0:
        return a.stream == b.stream
    return a.request == b.request


def _two_servers_in(client: Node, servers: list[Node], one_connection: bool = False) -> list[Node]:
    """Up to two of ``servers`` that answered ``client``: inside its time (within TOLERANCE_NS;
    cheap, checked first) and the same request (``_same_exchange``). One is a link, two already
    make it ambiguous, so the scan stops there (it runs for every local client call).
    ``one_connection``: the servers are of the client's own connection, told apart by stream.

    The server must also have received the request before the client had its answer
    (``s.start <= client.end``, no tolerance: causal, no syscall race in it). Without that, on a
    keep-alive connection the previous exchange's server call (which ended within the tolerance
    of this one) looked like this request's server too."""
    lo, hi, end = client.start - TOLERANCE_NS, client.end + TOLERANCE_NS, client.end
    found: list[Node] = []
    for s in servers:
        if lo <= s.start <= end and s.end <= hi and _same_exchange(client, s, one_connection):
            found.append(s)
            if len(found) == 2:
                break
    return found


def _two_clients_around(server: Node, clients: list[Node], one_connection: bool = False) -> list[Node]:
    """Up to two of ``clients`` that ``server`` may have answered, newest first: the same rule
    as ``_two_servers_in`` seen from the server (it runs for every local server call). A client
    that had its answer before this server call received its request is an earlier exchange of
    the connection (keep-alive: the previous request's client, while this one's is not complete
    yet), never this call's."""
    received, start, end = server.start, server.start + TOLERANCE_NS, server.end - TOLERANCE_NS
    found: list[Node] = []
    for c in reversed(clients):
        if c.start <= start and end <= c.end and received <= c.end and _same_exchange(server, c, one_connection):
            found.append(c)
            if len(found) == 2:
                break
    return found


class LocalLinker:
    def __init__(
        self,
        emit: Emit,
        hold_s: float = 1.5,
        enabled: bool = True,
        max_held: int = 20000,
        ignore_peers: Iterable[tuple[str, int]] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self._emit_native: Optional[LinkEmit] = emit if isinstance(emit, LinkEmit) else None
        self.gate: Gate = keep_all
        self._gate_native: Optional[LinkGate] = None  # the gate's LinkGate, called natively
        self.hold_s = hold_s
        self.enabled = enabled
        self.max_held = max_held
        self.ignore_peers = frozenset(ignore_peers)  # e.g. the agent's own OTLP receiver
        self.clock = clock
        self._counts: Counter[str] = Counter()  # the rare ones; the per-link ones are ints:
        self._peer_links = 0
        self._thread_links = 0
        self._lock = threading.Lock()
        # bound once: ``lock.acquire()`` on a compiled path looks the method up per call
        self._acquire: Callable[[], object] = self._lock.acquire
        self._release: Callable[[], object] = self._lock.release
        self._held = 0
        self._expiry: deque[Node] = deque()  # deadlines only grow: hold_s is constant
        self._clients: dict[int, list[Node]] = {}  # thread_key(pid, tid) -> waiting client nodes
        self._servers: dict[tuple[Any, ...], list[Node]] = {}  # (port, method, path) -> waiting servers
        self._servers_on: dict[ConnKey, list[Node]] = {}  # connection -> waiting servers
        # recent local client nodes, oldest first, at most RECENT_ON / RECENT per list (a list: native
        # append and scan; a deque per connection was a 64-slot block each, one per connection)
        self._recent: dict[int, list[Node]] = {}  # server port -> recent local client nodes
        self._recent_on: dict[ConnKey, list[Node]] = {}  # connection -> its recent client nodes
        # pids that served -> when last (a count of server calls: their order, as an LRU; a plain
        # dict's store is native, an OrderedDict's store and move_to_end were generic calls)
        self._serving: dict[int, int] = {}
        self._served = 0
        self._window: dict[int, int] = {}  # thread_key(pid, tid) -> end of its last server call
        self.event_loop_pids: set[int] = set()

    # -- entry points ---------------------------------------------------------------------------
    def set_gate(self, gate: Gate) -> None:
        """What decides, per span leaving with its final trace id, whether it is exported."""
        self.gate = gate
        self._gate_native = method_owner(gate, "after_link", LinkGate)

    @property
    def counters(self) -> Counter[str]:
        """What happened, by name (a copy)."""
        out = Counter(self._counts)
        if self._peer_links:
            out["peer_links"] = self._peer_links
        if self._thread_links:
            out["thread_links"] = self._thread_links
        return out

    def offer(self, call: Call, span: ReadableSpan, pending: Any = None) -> None:
        conn = call.conn
        ignore = self.ignore_peers
        if ignore and conn is not None and conn.peer is not None and (conn.peer.address, conn.peer.port) in ignore:
            self._counts["receiver_traffic"] += 1  # an SDK exporting to us: not the app's traffic
            return
        if not self.enabled or conn is None or call.role is _UNKNOWN:
            gate = self._gate_native
            if gate.after_link(call, span, pending, None) if gate is not None else self.gate(call, span, pending, None):
                sink = self._emit_native
                if sink is not None:
                    sink.emit_span(call, span)
                else:
                    self.emit(call, span)
            return
        out: list[Node] = []
        node = Node(call, span, 0.0, pending)  # its deadline once held (_hold)
        self._acquire()  # not ``with``: two generic lookups of __enter__/__exit__ and a 4-argument call
        try:
            if call.role is _SERVER:
                self._on_server(node, out)
            else:
                self._on_client(node, out)
        finally:
            self._release()
        self._emit(out)

    def sweep(self, now: Optional[float] = None) -> None:
        """Emit the trees whose hold ran out (called by a timer)."""
        now = self.clock() if now is None else now
        out: list[Node] = []
        with self._lock:
            expiry = self._expiry
            while expiry and expiry[0].deadline <= now:
                node = expiry.popleft()
                if node.waiting:
                    self._unwait(node)
                    if node.parent is None:
                        self._counts["hold_expired"] += 1
                        self._flush(node, None, out)
            if len(self._serving) > 4096 or len(self._window) > 65536:
                self._window.clear()
                if len(self._serving) > 2048:  # the 2,048 that served last stay
                    last = sorted(self._serving.items(), key=_second)[-2048:]
                    self._serving = dict(last)
        self._emit(out)

    def flush_all(self) -> None:
        """Emit everything held (shutdown)."""
        out: list[Node] = []
        with self._lock:
            for node in list(self._expiry):
                if node.waiting:
                    self._unwait(node)
                    if node.parent is None:
                        self._flush(node, None, out)
            self._expiry.clear()
        self._emit(out)

    @property
    def held(self) -> int:
        return self._held

    # -- the two sides ----------------------------------------------------------------------------
    def _on_server(self, node: Node, out: list[Node]) -> None:
        call = node.call
        assert call is not None  # a node being offered has not been emitted
        conn = call.conn
        assert conn is not None
        pid = conn.pid
        key = thread_key(pid, conn.tid)
        self._served += 1
        self._serving[pid] = self._served
        last_end = self._window.get(key)
        if last_end is not None and last_end > call.start_ns + TOLERANCE_NS and pid not in self.event_loop_pids:
            self.event_loop_pids.add(pid)  # two requests at once on one thread: an event loop
            self._counts["event_loop_processes"] += 1
        self._window[key] = max(call.end_ns, last_end or 0)
        if pid not in self.event_loop_pids:
            waiting = self._clients.get(key)
            if waiting:
                for child in list(waiting):
                    c = child.call
                    assert c is not None  # waiting: not emitted
                    if call.start_ns - TOLERANCE_NS <= c.start_ns and c.end_ns <= call.end_ns + TOLERANCE_NS:
                        self._unwait(child)
                        self._adopt(node, child)
                        self._thread_links += 1
        if call.traceparent is None and self._local_peer(call) and call.protocol in LINKED_PROTOCOLS:
            key_on = conn_key(call)
            parent = self._client_for(node, key_on)
            if parent is not None:
                self._peer_links += 1
                if parent.done:
                    self._flush(node, parent, out)
                else:
                    self._adopt(parent, node)
                return
            table: Any = self._servers_on if key_on is not None else self._servers
            if self._hold(node, table, key_on if key_on is not None else self._server_key(call), out):
                return
        self._flush(node, None, out)

    def _on_client(self, node: Node, out: list[Node]) -> None:
        call = node.call
        assert call is not None
        conn = call.conn
        assert conn is not None
        if call.protocol in LINKED_PROTOCOLS and conn.peer is not None and is_local_address(conn.peer.address):
            port = conn.peer.port
            key_on = conn_key(call)
            # servers on this very connection, then those whose connection is not known in full
            found: list[Node] = []
            if key_on is not None:
                on = self._servers_on.get(key_on)
                if on is not None:
                    found = _two_servers_in(node, on, True)
            if not found:
                found = _two_servers_in(node, self._servers.get((port, *_request_of(call)), []))
            if len(found) == 1:
                self._unwait(found[0])
                self._adopt(node, found[0])
                self._peer_links += 1
            elif found:
                self._counts["peer_ambiguous"] += 1
            # typed (not Any): the dict's get, len and store are native
            table: dict[Any, list[Node]] = self._recent_on if key_on is not None else self._recent
            key: Any = key_on if key_on is not None else port
            recent = table.get(key)
            if recent is None:
                if len(table) > 4096:
                    table.clear()
                recent = table[key] = [node]
            else:
                recent.append(node)
                # one connection: the calls that completed just before (a server call reaches the
                # linker microseconds after its client at most); a port: every connection's
                if len(recent) > (RECENT_ON if key_on is not None else RECENT):
                    del recent[0]
        pid = conn.pid
        if call.traceparent is None and pid in self._serving and pid not in self.event_loop_pids:
            if self._hold(node, self._clients, thread_key(pid, conn.tid), out):
                return
        self._flush(node, None, out)

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _server_port(call: Call) -> int:
        """The port the server call was received on (what its client connected to); the Host
        header's port only when the socket's own end is not known: behind a proxy the header
        names the proxy's upstream (``Host: back`` -> 80) or the original host."""
        local = call.conn.local if call.conn is not None else None
        if local is not None and local.port:
            return local.port
        port = call.attributes.get("server.port")
        return port if isinstance(port, int) else 0

    def _server_key(self, call: Call) -> tuple[Any, ...]:
        return (self._server_port(call), *_request_of(call))

    @staticmethod
    def _local_peer(call: Call) -> bool:
        peer = call.conn.peer if call.conn is not None else None
        return peer is not None and is_local_address(peer.address)

    def _client_for(self, node: Node, key_on: Optional[ConnKey]) -> Optional[Node]:
        """A client call already seen for this server call (the rarer order); unique or None: on
        its connection, else among the port's clients whose connection is not known in full."""
        found: list[Node] = []
        if key_on is not None:
            recent = self._recent_on.get(key_on)
            if recent:
                found = _two_clients_around(node, recent, True)
        if not found:
            assert node.call is not None
            recent = self._recent.get(self._server_port(node.call))
            if recent:
                found = _two_clients_around(node, recent)
        if not found:
            return None
        if len(found) > 1:
            self._counts["peer_ambiguous"] += 1
        return found[0] if len(found) == 1 else None

    def _hold(self, node: Node, table: dict[Any, list[Node]], key: Any, out: list[Node]) -> bool:
        if self._held >= self.max_held:
            self._counts["hold_overflow"] += 1
            return False
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = []
        if len(bucket) >= MAX_BUCKET:  # the oldest look-alike goes out as it is
            oldest = bucket[0]
            self._unwait(oldest)
            self._counts["hold_overflow"] += 1
            if oldest.parent is None:
                self._flush(oldest, None, out)
        node.waiting = True
        node.deadline = self.clock() + self.hold_s
        node.home = table
        node.home_key = key
        bucket.append(node)
        expiry = self._expiry
        expiry.append(node)
        self._held += 1
        if len(expiry) > 2 * self._held + EXPIRY_SLACK:  # each rebuild drops at least half of it
            self._expiry = deque(n for n in expiry if n.waiting)
        return True

    def _unwait(self, node: Node) -> None:
        node.waiting = False
        self._held -= 1
        table = node.home
        assert table is not None  # waiting
        key = node.home_key
        node.home = None
        node.home_key = None
        bucket = table.get(key)
        if bucket is not None:
            try:
                bucket.remove(node)
            except ValueError:
                pass
            if not bucket:
                table.pop(key, None)

    @staticmethod
    def _adopt(parent: Node, child: Node) -> None:
        child.parent = parent
        children = parent.children
        if children is None:
            parent.children = [child]
        else:
            children.append(child)

    def _flush(self, root: Node, done_parent: Optional[Node], out: list[Node]) -> None:
        """Fix ids of ``root`` (under ``done_parent`` if given) and its subtree; queue for emit."""
        if done_parent is not None:
            assert root.span is not None  # not emitted yet: done_parent's ids are all it needs of that one
            root.span = respan(root.span, done_parent.trace_id, done_parent.span_id)
            root.trace_id = done_parent.trace_id
            root.parent = done_parent  # _emit: the sampling decision follows the parent's
        stack = [root]
        while stack:
            node = stack.pop()
            node.done = True
            out.append(node)
            children = node.children
            if children is None:
                continue
            for child in children:
                if child.waiting:
                    self._unwait(child)
                assert child.span is not None
                child.span = respan(child.span, node.trace_id, node.span_id)
                child.trace_id = node.trace_id
                stack.append(child)
            node.children = None

    def _emit(self, nodes: list[Node]) -> None:
        """Outside the lock; a parent comes before its children (``_flush``), so its answer is known."""
        gate, native, sink = self.gate, self._gate_native, self._emit_native
        for node in nodes:
            parent, call, span = node.parent, node.call, node.span
            assert call is not None and span is not None  # each node is emitted once
            parent_kept = parent.kept if parent is not None else None
            if native is not None:
                kept = native.after_link(call, span, node.pending, parent_kept)
            else:
                kept = gate(call, span, node.pending, parent_kept)
            node.kept = kept
            if kept:
                if sink is not None:
                    sink.emit_span(call, span)
                else:
                    self.emit(call, span)
            node.release()
