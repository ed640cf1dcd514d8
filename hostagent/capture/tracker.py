"""ConnectionTracker: capture events -> per-connection protocol parsers -> Calls with their socket.

The kernel reports bytes per (pid, fd). This stage keeps one state per such socket, picks its
protocol from the first bytes (the first enabled spec, in registry order, whose ``looks_like``
accepts them; the choice sticks), feeds the parser each segment in order and tags the Calls it
returns with the ``Connection`` they travelled on.

Sockets that never look like a known protocol, that prove not to be the one detected (a
parser's ``rejected``), whose protocol's probe gets disabled, or that leave their protocol
(``upgraded``: TLS, 101 / CONNECT tunnels) are muted: ``on_mute(pid, fd)`` asks the kernel side to stop
copying their bytes, because every event Python throws away is wasted work in both places.
When a probe is turned back on, ``on_unmute(pid, fd)`` undoes its mutes: a socket muted because
its protocol was off goes on with its parser from the next message (what was half seen before is
dropped, never paired with a later answer), and one judged unknown while the protocol was off is
detected again. Bytes held for detection while a protocol was off are forgotten for the same
reason. One judged unknown on a stream the kernel lost calls of meanwhile is detected again a while
later (``retry_unknown``, a few times at most, counted as ``unknown_retried``): the losses may have
taken every byte that would have told its protocol.

Bounded: at most ``max_connections`` states, least recently used evicted first (and counted).
The hot path is one dict lookup by ``pid << 32 | fd`` per event. A parser may offer, besides
``feed(segment)``, ``feed_bytes(direction, data, size, ts_ns)`` with the same meaning: stream
sockets then hand it the event's fields with no Segment built per event (HTTP/1 does).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from typing import Final, Optional

from hostagent.capture.state import (
    DETECT_BYTES,
    DETECT_SEGMENTS,
    DETECT_SEGMENTS_MIDWAY,
    DETECTING,
    MUTED,
    OFF,
    PARSING,
    UNKNOWN,
    UNKNOWN_RETRIES,
    UNKNOWN_RETRY_FACTOR,
    UNKNOWN_RETRY_NS,
    ConnState,
    transport_of,
)
from hostagent.model import COMPILED, Call, CaptureEvent, Direction, Endpoint, EventKind, ParserStats, Role, Segment
from hostagent.protocols.base import ProtocolSpec
from hostagent.protocols.http1 import Http1Parser

_set: Final = object.__setattr__  # Call is frozen; see _tag
SPECS_REFRESH_NS: Final = 100_000_000  # re-read the enabled protocols at most every 100 ms of event time
# A period start no event time is within SPECS_REFRESH_NS of: the next event re-reads them
# (settings_changed). Small enough for mypyc's unboxed ints.
_SPECS_STALE: Final = -(1 << 60)

PICK_MEMO_MAX = 1024  # distinct first-bytes remembered by protocol detection
PICK_MEMO_BYTES = 1024  # longer first segments are tested every time
# Unknown connections waiting to be detected again at most (more are left muted, counted):
# each holds its state until its time comes, even if closed meanwhile.
UNKNOWN_RETRY_MAX = 4096

_DATA: Final = EventKind.DATA
_CONNECT: Final = EventKind.CONNECT
_ACCEPT: Final = EventKind.ACCEPT
_CLOSE: Final = EventKind.CLOSE
_EXIT: Final = EventKind.EXIT
_EGRESS: Final = Direction.EGRESS
_INGRESS: Final = Direction.INGRESS
_CLIENT: Final = Role.CLIENT


class ConnectionTracker:
    """Per-connection stage between the probes and identity/traces. Not thread-safe: one consumer."""

    def __init__(
        self,
        protocols: Callable[[], tuple[ProtocolSpec, ...]],
        *,
        max_connections: int = 65536,
        on_mute: Optional[Callable[[int, int], None]] = None,
        on_unmute: Optional[Callable[[int, int], None]] = None,
    ) -> None:
        self._protocols = protocols
        self._max = max_connections
        self._on_mute = on_mute
        self._on_unmute = on_unmute
        self._conns: OrderedDict[int, ConnState] = OrderedDict()
        # bound once: compiled, a call through it skips the method lookup ``conns.move_to_end``
        # costs per event
        self._touch: Callable[[int], None] = self._conns.move_to_end
        self._by_pid: dict[int, set[int]] = {}
        self._specs: tuple[ProtocolSpec, ...] = protocols()
        # Names, not specs, say whether a protocol is on: [capture] raw_sql swaps the SQL specs
        # for equal ones with another parser factory, which turns nothing off.
        self._names: frozenset[str] = frozenset(spec.name for spec in self._specs)
        self._specs_ts = -1
        # (ingress?, transport, first bytes) -> the spec they select (None: none), for _specs.
        self._picks: dict[tuple[bool, str, bytes], Optional[ProtocolSpec]] = {}
        self._counters: dict[str, int] = {
            "connections_created": 0, "evicted": 0, "unknown": 0, "muted": 0, "upgraded": 0,
            "closed": 0, "calls": 0, "lost_gaps": 0, "unknown_retried": 0, "unknown_retry_full": 0,
        }  # fmt: skip
        # (when, order, key, state): connections to detect again (retry_unknown); ``order`` keeps
        # states from ever being compared
        self._retries: list[tuple[int, int, int, ConnState]] = []
        self._retry_order = 0
        self._detected: dict[str, int] = {}
        self._rejected: dict[str, int] = {}  # "rejected_<protocol>": detected, then proved not to be it
        self._closed_parser_stats: dict[str, int] = {"resyncs": 0, "unpaired": 0, "truncated": 0}

    # -- public ---------------------------------------------------------------------------------
    def handle(self, event: CaptureEvent) -> list[Call]:
        """One event in; the Calls it finished out. A DATA event (nearly all of them) is handled
        here without a further method layer; a parser with ``feed_bytes`` gets no Segment."""
        if event.kind != _DATA:
            return self._control(event)
        key = event.pid << 32 | (event.fd & 0xFFFFFFFF)
        conns = self._conns
        state = conns.get(key)
        if state is None:
            state = self._create(key, event)
            state.midway = state.transport != "udp"
        else:
            self._touch(key)
            if state.local is None and event.local_port:
                state.local = Endpoint(event.local_addr, event.local_port)
            if state.peer is None and event.peer_addr and event.peer_port and state.transport == "tcp":
                # accept() named no peer (libuv): the kernel learnt it from the handshake
                state.peer = Endpoint(event.peer_addr, event.peer_port)
        phase = state.phase
        if phase > PARSING:  # UNKNOWN or MUTED: bytes still in flight from before the mute
            return []
        lost_calls: Optional[list[Call]] = None
        if event.lost != state.lost:  # the kernel did not capture some calls before this one
            state.lost = event.lost
            lost_calls = self._after_lost(state)
        ts = event.ts_ns
        # abs(): events from different CPUs arrive slightly out of order; only a jump either way
        # by more than the period (or the period passing) triggers a re-read.
        if abs(ts - self._specs_ts) > SPECS_REFRESH_NS:
            self.refresh(ts)
            phase = state.phase
            if phase != PARSING and phase != DETECTING:
                return []
        direction = event.direction
        history = state.tids[direction]
        if not history:
            history.append((ts, event.tid))
        elif history[-1][1] != event.tid:  # the thread changed (rare): remember it
            state.note_tid(direction, ts, event.tid)
        http1 = state.http1
        if http1 is not None and phase == PARSING:
            calls = http1.feed_bytes(direction, event.data, event.size, ts)
            if http1.upgraded:
                self._leave(state, http1)
        else:
            feed = state.feed_bytes
            if feed is not None and phase == PARSING:
                calls = feed(direction, event.data, event.size, ts)
            else:
                calls = self._feed_segment(state, event, phase)
            parser = state.parser
            if parser is not None and getattr(parser, "upgraded", False):
                self._leave(state, parser)
        if lost_calls:
            calls = lost_calls + calls
        if not calls:
            return calls
        if state.transport == "udp" and event.peer_addr:
            return self._tag(state, calls, Endpoint(event.peer_addr, event.peer_port))
        return self._tag(state, calls, state.peer)

    def refresh(self, ts_ns: Optional[int] = None) -> None:
        """Re-read the enabled protocols: mute sockets whose protocol was turned off, take up
        again those muted (or left undetected) while a protocol now on was off. Called per event
        time period from ``handle`` and, with no time, by the daemon right after a probe change:
        a muted socket sends no event that would get it here."""
        if ts_ns is not None:
            # before the read: a settings_changed() after the read must not be overwritten
            self._specs_ts = ts_ns
        specs = self._protocols()
        if specs == self._specs:
            return
        self._specs = specs
        self._picks.clear()
        names = frozenset(spec.name for spec in specs)
        gained = not names <= self._names
        self._names = names
        for state in list(self._conns.values()):
            phase = state.phase
            if phase == PARSING:
                if state.spec is not None and state.spec.name not in names:
                    self._mute(state, OFF)
            elif not gained:
                continue
            elif phase == OFF:
                if state.spec is not None and state.spec.name in names:
                    self._resume(state)
            elif phase == UNKNOWN:
                if not names <= state.judged:
                    state.restart_detection()
                    self._unmute(state)
            elif phase == DETECTING:
                # held bytes were seen while a protocol now on was off: maybe half an exchange
                state.restart_detection()

    def settings_changed(self) -> None:
        """The runtime settings changed (reload or admin API, on their thread): the next event
        re-reads the enabled protocols, so that a connection opened after the change was
        acknowledged is parsed under it (100 ms of event time could pass before, and a psql
        started right after a reload's READY kept the old SQL parser). Only the period's start
        is touched, from another thread: the per-event path checks nothing more than before."""
        self._specs_ts = _SPECS_STALE

    def _resume(self, state: ConnState) -> None:
        """Its probe is on again: parse from the next message. The parser forgets what waited
        for an answer (``lost()``, as after calls lost in the kernel): the bytes in between were
        never seen, so no later answer may complete a request from before."""
        state.phase = PARSING
        lost = getattr(state.parser, "lost", None)
        if lost is not None:
            lost()  # calls it finishes were half seen before the probe went off: dropped
        self._unmute(state)

    def retry_unknown(self, now_ns: int) -> int:
        """Detect again, from their next bytes, the connections judged unknown on a lossy stream
        whose time has come (``now_ns``: CLOCK_MONOTONIC, as events' ``ts_ns``); how many. A muted
        socket sends no event that would get it here: the daemon calls this from its poll loop."""
        retries = self._retries
        n = 0
        while retries and retries[0][0] <= now_ns:
            _, _, key, state = heapq.heappop(retries)
            if self._conns.get(key) is not state or state.phase != UNKNOWN:
                continue  # closed, evicted, or taken up again by a probe change meanwhile
            state.retries += 1
            state.restart_detection()
            self._unmute(state)
            # ``unknown`` counts connections judged unknown, not judgements: taken up again, this
            # one is not unknown (yet); given up again, it is counted again, detected, it is not
            self._counters["unknown"] -= 1
            n += 1
        self._counters["unknown_retried"] += n
        return n

    def close_all(self, ts_ns: int) -> int:
        """The agent stops: the calls still waiting for an answer on any connection are counted
        (``in_flight_at_stop``, returned too) and not reported. How they end is unknown, and the
        parsers' close would report them as failed (connection closed) when nothing failed; not
        counted, they were lost without a trace (the daemon asked for this method, which did not
        exist). MySQL's parser counts its own as unpaired, but for a CALL whose rows came (counted here)."""
        n = 0
        for state in self._conns.values():
            if state.parser is not None and state.phase == PARSING:
                n += len(state.parser.close(ts_ns))
        self._counters["in_flight_at_stop"] = self._counters.get("in_flight_at_stop", 0) + n
        return n

    def stats(self) -> dict[str, int]:
        """Counters for status and metrics (parser counters include live connections)."""
        out = dict(self._counters)
        out["connections_open"] = len(self._conns)
        for name, count in self._detected.items():
            out[f"detected_{name}"] = count
        out.update(self._rejected)
        parser_totals = dict(self._closed_parser_stats)
        for state in self._conns.values():
            _add_parser_stats(parser_totals, state)
        for name, count in parser_totals.items():
            out[f"parser_{name}"] = count
        return out

    # -- events ---------------------------------------------------------------------------------
    def _control(self, event: CaptureEvent) -> list[Call]:
        kind = event.kind
        if kind == _CONNECT or kind == _ACCEPT:
            return self._open(event)
        if kind == _CLOSE:
            state = self._forget(event.pid << 32 | (event.fd & 0xFFFFFFFF))
            return self._finish(state, event.ts_ns) if state is not None else []
        if kind == _EXIT:
            return self._exit(event.pid, event.ts_ns)
        return []

    def _open(self, event: CaptureEvent) -> list[Call]:
        key = event.pid << 32 | (event.fd & 0xFFFFFFFF)
        old = self._forget(key) if key in self._conns else None
        calls = self._finish(old, event.ts_ns) if old is not None else []
        self._create(key, event)
        return calls

    def _feed_segment(self, state: ConnState, event: CaptureEvent, phase: int) -> list[Call]:
        """Detection, datagram sockets and parsers without ``feed_bytes`` (which get Segments)."""
        datagram = state.transport == "udp"
        direction, data, size, ts = event.direction, event.data, event.size, event.ts_ns
        calls: list[Call] = []
        if phase == DETECTING:
            # The first bytes of either direction; on a stream, the bytes of one direction joined
            # over the segments seen so far (a message may arrive in pieces).
            held = state.held
            first = data
            if held and not datagram:
                first = b"".join([s.data for s in held if s.direction == direction] + [data])[:DETECT_BYTES]
            spec = self._pick(first, direction, state.transport)
            if spec is None and first is not data and state.midway:
                # what was held may be the end of a message from before the agent looked
                spec = self._pick(data, direction, state.transport)
                if spec is not None:
                    held = state.held = []
            if spec is None:
                kept = None if datagram else Segment(direction, data, size, ts, tail=event.tail, frames=event.frames)
                self._undetected(state, kept, len(data), ts)
                return calls
            make_for = spec.new_parser_for
            parser = state.parser = make_for(state.transport) if make_for is not None else spec.new_parser()
            state.spec = spec
            state.phase = PARSING
            if not datagram:  # a datagram's Segment carries its peer: feed() only
                state.feed_bytes = getattr(parser, "feed_bytes", None)
            state.http1 = parser if not datagram and isinstance(parser, Http1Parser) else None
            self._detected[spec.name] = self._detected.get(spec.name, 0) + 1
            if held:
                state.held = []
                for earlier in held:  # the pieces the decision was made on, not the other direction's
                    if earlier.direction == direction:
                        calls.extend(parser.feed(earlier))
        feed = state.feed_bytes
        if feed is not None:
            more = feed(direction, data, size, ts)
        else:
            assert state.parser is not None
            more = state.parser.feed(Segment(
                direction, data, size, ts, event.peer_addr if datagram else "", event.peer_port if datagram else 0,
                event.tail, event.frames,
            ))  # fmt: skip
        if not calls:
            return more
        calls.extend(more)
        return calls

    def _after_lost(self, state: ConnState) -> list[Call]:
        """Calls of this connection were shed or refused in the kernel (counted there as drops):
        a parser that pairs requests with responses in order must not pair the next response
        with a request whose own response was lost (``lost()``: it drops what waits and
        resynchronises); bytes held for detection may be half a message: dropped."""
        self._counters["lost_gaps"] += 1
        state.held = []
        if state.phase == DETECTING and state.seen_segments == 0:
            # lost before detection saw anything (shed while muted, or before the agent looked):
            # nothing it judges on is missing
            state.lost_at_detect = state.lost
        lost = getattr(state.parser, "lost", None)  # None too while no parser is chosen
        return lost() if lost is not None else []

    def _undetected(self, state: ConnState, segment: Optional[Segment], size: int, ts_ns: int) -> None:
        """No protocol recognised these bytes yet: hold them (streams) or give up on the socket."""
        state.seen_segments += 1
        state.seen_bytes += size
        if state.midway:
            if state.seen_segments < DETECT_SEGMENTS_MIDWAY:
                if segment is not None:  # the last few pieces only: a message that began in them
                    held = state.held
                    if len(held) >= DETECT_SEGMENTS:
                        del held[0]
                    held.append(segment)
                return
        elif state.seen_segments < DETECT_SEGMENTS and state.seen_bytes < DETECT_BYTES:
            if segment is not None:
                state.held.append(segment)
            return
        state.held = []
        state.judged = self._names
        self._counters["unknown"] += 1
        self._mute(state, UNKNOWN)
        if state.lost != state.lost_at_detect and state.retries < UNKNOWN_RETRIES:
            self._retry_later(state, ts_ns)

    def _retry_later(self, state: ConnState, ts_ns: int) -> None:
        """The kernel lost calls of this stream while it was being detected: judged on what was
        left, it is detected again later (``retry_unknown``), each time after longer."""
        if len(self._retries) >= UNKNOWN_RETRY_MAX:
            self._counters["unknown_retry_full"] += 1
            return
        self._retry_order += 1
        when = ts_ns + UNKNOWN_RETRY_NS * UNKNOWN_RETRY_FACTOR**state.retries
        key = state.pid << 32 | (state.fd & 0xFFFFFFFF)
        heapq.heappush(self._retries, (when, self._retry_order, key, state))

    def _leave(self, state: ConnState, parser: object) -> None:
        """The parser stopped (``upgraded``): the connection left its protocol (TLS, a 101 or
        CONNECT tunnel, a replication stream), or - ``rejected`` - was never of it: its answers
        proved detection wrong (a memcached or HTTP line taken for a Redis inline command). A
        rejected one is muted as unknown, its detection taken back (``detected_<name>`` counts
        connections of that protocol, not guesses) and counted as ``rejected_<name>``; it is
        detected again if a protocol not tried on it is turned on."""
        if getattr(parser, "rejected", False) and state.spec is not None:
            name = state.spec.name
            key = f"rejected_{name}"
            self._rejected[key] = self._rejected.get(key, 0) + 1
            if self._detected.get(name, 0) > 0:
                self._detected[name] -= 1
            state.judged = self._names
            self._counters["unknown"] += 1
            self._mute(state, UNKNOWN)
            return
        self._counters["upgraded"] += 1
        self._mute(state, MUTED)

    def _pick(self, data: bytes, direction: Direction, transport: str) -> Optional[ProtocolSpec]:
        """The first enabled spec for this transport whose ``looks_like`` accepts ``data``.

        ``looks_like`` is a pure function of (data, direction), and the first bytes of new
        connections repeat (every client sends the same first request, every server the same
        greeting): the answer is remembered per (direction, transport, bytes) for the current
        specs, bounded, so detecting a new connection costs one dict lookup instead of a
        ``looks_like`` per protocol tried before the one that matches.
        """
        key = (direction == Direction.INGRESS, transport, data)
        memo = self._picks
        if len(data) <= PICK_MEMO_BYTES and key in memo:  # bytes cache their hash: one hashing
            return memo[key]
        stream = transport != "udp"
        found = None
        for spec in self._specs:
            transports = spec.transports
            if (transport in transports or (stream and "tcp" in transports)) and spec.looks_like(data, direction):
                found = spec
                break
        if len(data) <= PICK_MEMO_BYTES:
            if len(memo) >= PICK_MEMO_MAX:
                memo.clear()
            memo[key] = found
        return found

    def _exit(self, pid: int, ts_ns: int) -> list[Call]:
        """The process is gone: its sockets closed without close() events; finish them all."""
        calls: list[Call] = []
        for key in list(self._by_pid.get(pid, ())):
            state = self._forget(key)
            if state is not None:
                calls.extend(self._finish(state, ts_ns))
        return calls

    # -- helpers ----------------------------------------------------------------------------------
    def _create(self, key: int, event: CaptureEvent) -> ConnState:
        conns = self._conns
        if len(conns) >= self._max:
            _, victim = conns.popitem(last=False)
            self._unindex(victim)
            _add_parser_stats(self._closed_parser_stats, victim)
            self._counters["evicted"] += 1
        # port 0: no peer known (accept(fd, NULL, NULL), an unconnected datagram socket)
        peer = Endpoint(event.peer_addr, event.peer_port) if event.peer_addr and event.peer_port else None
        local = Endpoint(event.local_addr, event.local_port) if event.local_port else None
        pid = event.pid
        state = ConnState(
            pid, event.fd, event.cgroup_id, transport_of(event.family, event.sock_type), peer, event.comm, local,
            event.lost,
        )
        conns[key] = state
        keys = self._by_pid.get(pid)
        if keys is None:
            self._by_pid[pid] = {key}
        else:
            keys.add(key)
        self._counters["connections_created"] += 1
        return state

    def _forget(self, key: int) -> Optional[ConnState]:
        state = self._conns.pop(key, None)
        if state is not None:
            self._unindex(state)
        return state

    def _unindex(self, state: ConnState) -> None:
        keys = self._by_pid.get(state.pid)
        if keys is not None:
            keys.discard(state.pid << 32 | (state.fd & 0xFFFFFFFF))
            if not keys:
                del self._by_pid[state.pid]

    def _finish(self, state: ConnState, ts_ns: int) -> list[Call]:
        self._counters["closed"] += 1
        calls: list[Call]
        http1 = state.http1
        if http1 is not None:  # the parser, typed: compiled, its close and counters read natively
            calls = http1.close(ts_ns) if state.phase == PARSING else []
            stats = http1.stats
            if stats.resyncs or stats.unpaired or stats.truncated:
                _add_stats(self._closed_parser_stats, stats)
        else:
            calls = []
            if state.parser is not None and state.phase == PARSING:
                calls = state.parser.close(ts_ns)
            _add_parser_stats(self._closed_parser_stats, state)
        return self._tag(state, calls, state.peer) if calls else calls

    def _mute(self, state: ConnState, phase: int) -> None:
        state.phase = phase
        if phase == MUTED or phase == OFF:
            self._counters["muted"] += 1
        if self._on_mute is not None:
            self._on_mute(state.pid, state.fd)

    def _unmute(self, state: ConnState) -> None:
        if self._on_unmute is not None:
            self._on_unmute(state.pid, state.fd)

    def _tag(self, state: ConnState, calls: list[Call], peer: Optional[Endpoint]) -> list[Call]:
        """Attach the Connection. The parser just built these Calls and kept no reference, so this
        stage is their only holder: setting ``conn`` in place, before anyone else sees them, is
        the same as ``dataclasses.replace`` at a tenth of the cost (1.5 us per Call here)."""
        self._counters["calls"] += len(calls)
        tids = state.tids
        for call in calls:
            # The thread that handled the request: it read it (server) or wrote it (client).
            req_dir = _EGRESS if call.role == _CLIENT else _INGRESS
            history = tids[req_dir]
            # One thread ever on that side (nearly always): it is the one, whatever the time.
            tid = history[0][1] if len(history) == 1 else state.tid_at(req_dir, call.start_ns)
            conn = state.conn
            if conn is None or conn.tid != tid or conn.peer is not peer or conn.local is not state.local:
                conn = state.connection(tid, peer)
            if COMPILED:  # a C store into the instance (as model's own __init__ does)
                call.conn = conn  # type: ignore[misc]
            else:
                _set(call, "conn", conn)
        return calls


def _add_parser_stats(totals: dict[str, int], state: ConnState) -> None:
    stats = getattr(state.parser, "stats", None)
    if stats is None or not (stats.resyncs or stats.unpaired or stats.truncated):
        return  # nothing counted (nearly every connection): no three dict updates per close
    _add_stats(totals, stats)


def _add_stats(totals: dict[str, int], stats: ParserStats) -> None:
    totals["resyncs"] += stats.resyncs
    totals["unpaired"] += stats.unpaired
    totals["truncated"] += stats.truncated
