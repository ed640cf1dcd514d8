"""ConnectionTracker with realistic event sequences (as the probes decode them) carrying bytes
recorded from real servers (tests/fixtures/http1)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from hostagent.capture.tracker import SPECS_REFRESH_NS, ConnectionTracker
from hostagent.model import Call, CaptureEvent, Connection, Direction, Endpoint, EventKind, Role, Segment
from hostagent.protocols import http1
from hostagent.protocols.base import ParserStats, ProtocolSpec
from tests.fixtures.http1.load import chunks

PID, FD, CGROUP = 4242, 7, 991
IN, OUT = Direction.INGRESS, Direction.EGRESS


def ev(kind: EventKind, ts: int, *, pid: int = PID, fd: int = FD, tid: int = 0, **kw: object) -> CaptureEvent:
    return CaptureEvent(kind=kind, ts_ns=ts, pid=pid, tid=tid or pid, fd=fd, cgroup_id=CGROUP, **kw)  # type: ignore[arg-type]


def data(ts: int, direction: Direction, payload: bytes, **kw: object) -> CaptureEvent:
    kw.setdefault("size", len(payload))
    return ev(EventKind.DATA, ts, direction=direction, data=payload, sock_type=socket.SOCK_STREAM,
              family=socket.AF_INET, **kw)  # type: ignore[arg-type]  # fmt: skip


def opened(ts: int, **kw: object) -> CaptureEvent:
    """A connection the kernel saw begin (accept): detection gives up soon on it; one first
    seen by its data began before the agent looked and may start mid-message."""
    return ev(EventKind.ACCEPT, ts, family=socket.AF_INET, sock_type=socket.SOCK_STREAM, peer_addr="127.0.0.1",
              peer_port=51000, **kw)  # type: ignore[arg-type]  # fmt: skip


class Recorder:
    def __init__(self) -> None:
        self.muted: list[tuple[int, int]] = []

    def __call__(self, pid: int, fd: int) -> None:
        self.muted.append((pid, fd))


def tracker(
    specs: tuple[ProtocolSpec, ...] = (http1.SPEC,), **kw: object
) -> tuple[ConnectionTracker, Recorder]:
    rec = Recorder()
    return ConnectionTracker(lambda: specs, on_mute=rec, **kw), rec  # type: ignore[arg-type]


def feed(t: ConnectionTracker, events: list[CaptureEvent]) -> list[Call]:
    return [call for e in events for call in t.handle(e)]


REQ, RESP = (c for _, c in chunks("nginx_get_query"))  # curl GET /index.html?a=1&b=two, nginx 200


def test_server_connection_accept_data_close() -> None:
    t, rec = tracker()
    calls = feed(t, [
        ev(EventKind.ACCEPT, 10, family=socket.AF_INET, peer_addr="127.0.0.1", peer_port=51000, comm="nginx"),
        data(20, IN, REQ, tid=4243),  # a worker thread reads the request
        data(30, OUT, RESP, tid=4243),
        ev(EventKind.CLOSE, 40),
    ])  # fmt: skip
    assert len(calls) == 1
    call = calls[0]
    assert (call.role, call.name, call.start_ns, call.end_ns) == (Role.SERVER, "GET", 20, 30)
    assert call.conn == Connection(
        pid=PID,
        tid=4243,
        fd=FD,
        cgroup_id=CGROUP,
        peer=Endpoint("127.0.0.1", 51000),
        transport="tcp",
        comm="nginx",
    )
    assert rec.muted == []
    stats = t.stats()
    assert (stats["connections_open"], stats["detected_http"], stats["calls"], stats["closed"]) == (
        0,
        1,
        1,
        1,
    )


def test_a_peer_accept_did_not_name_comes_with_the_data() -> None:
    """accept(fd, NULL, NULL) (libuv): the ACCEPT event has the listener's family and no peer (the
    decoder gives 0.0.0.0 / 0); the kernel learns the peer from the handshake and the data events
    carry it. Never a 0.0.0.0 peer; the peer once known."""
    t, _ = tracker()
    calls = feed(t, [
        ev(EventKind.ACCEPT, 10, family=socket.AF_INET, peer_addr="0.0.0.0", peer_port=0, local_addr="127.0.0.1",
           local_port=8080),
        data(20, IN, REQ, peer_addr="127.0.0.1", peer_port=51000, local_addr="127.0.0.1", local_port=8080),
        data(30, OUT, RESP, peer_addr="127.0.0.1", peer_port=51000, local_addr="127.0.0.1", local_port=8080),
        data(40, IN, REQ, peer_addr="127.0.0.1", peer_port=51000),  # the next request, same peer
        data(50, OUT, RESP, peer_addr="127.0.0.1", peer_port=51000),
    ])  # fmt: skip
    assert [c.conn.peer for c in calls if c.conn is not None] == [Endpoint("127.0.0.1", 51000)] * 2
    # never known (the syscall data path): no peer rather than 0.0.0.0:0
    t, _ = tracker()
    calls = feed(t, [
        ev(EventKind.ACCEPT, 10, family=socket.AF_INET, peer_addr="0.0.0.0", peer_port=0),
        data(20, IN, REQ, peer_addr="0.0.0.0"), data(30, OUT, RESP, peer_addr="0.0.0.0"),
    ])  # fmt: skip
    assert len(calls) == 1 and calls[0].conn is not None and calls[0].conn.peer is None


def test_client_connection_tid_is_the_writer() -> None:
    t, _ = tracker()
    calls = feed(t, [
        ev(EventKind.CONNECT, 10, peer_addr="127.0.0.1", peer_port=18210),
        data(20, OUT, REQ, tid=5001),  # thread 5001 writes the request
        data(30, IN, RESP, tid=5002),  # an event-loop thread reads the answer
    ])  # fmt: skip
    assert [(c.role, c.conn.tid, c.conn.peer) for c in calls if c.conn] == [
        (Role.CLIENT, 5001, Endpoint("127.0.0.1", 18210)),
    ]  # fmt: skip


def test_keep_alive_requests_handled_by_different_threads() -> None:
    t, _ = tracker()
    r1, s1, r2, s2, r3, s3 = (c for _, c in chunks("nginx_keepalive_3"))
    calls = feed(t, [
        ev(EventKind.ACCEPT, 1),
        data(10, IN, r1, tid=11), data(11, OUT, s1, tid=11),
        data(20, IN, r2, tid=12), data(21, OUT, s2, tid=12),
        data(30, IN, r3, tid=11), data(31, OUT, s3, tid=11),
    ])  # fmt: skip
    assert [(c.start_ns, c.conn.tid) for c in calls if c.conn] == [(10, 11), (20, 12), (30, 11)]


def test_detection_sticks_and_unknown_is_muted_after_three_segments() -> None:
    t, rec = tracker()
    feed(t, [data(1, IN, REQ), data(2, IN, b"\x00garbage"), data(3, OUT, b"\x01\x02")])
    assert rec.muted == [] and t.stats()["detected_http"] == 1  # garbage later does not undo the choice
    other = 8
    t.handle(opened(9, fd=other))
    for ts in range(3):
        assert t.handle(data(10 + ts, IN, b"\x16\x03\x01 not http", fd=other)) == []
    assert rec.muted == [(PID, other)]
    assert t.handle(data(20, IN, REQ, fd=other)) == []  # in flight before the kernel saw the mute
    assert rec.muted == [(PID, other)]
    assert t.stats()["unknown"] == 1


def test_four_kib_without_a_match_is_unknown_at_once() -> None:
    t, rec = tracker()
    t.handle(opened(0))
    t.handle(data(1, IN, b"\x00" * 4096))
    assert rec.muted == [(PID, FD)]


def test_udp_spec_is_not_tried_on_tcp() -> None:
    t, rec = tracker(specs=(DATAGRAM_SPEC,))
    feed(t, [opened(0), data(1, IN, b"ping"), data(2, IN, b"ping"), data(3, IN, b"ping")])
    assert t.stats().get("detected_ping", 0) == 0
    assert rec.muted == [(PID, FD)]


def test_lru_bound_evicts_least_recently_used() -> None:
    t, _ = tracker(max_connections=2)
    feed(t, [data(1, IN, REQ, fd=1), data(2, IN, REQ, fd=2), data(3, IN, REQ, fd=1), data(4, IN, REQ, fd=3)])
    stats = t.stats()
    assert (stats["connections_open"], stats["evicted"]) == (2, 1)
    # fd 2 was evicted (fd 1 was used more recently): fd 1 kept its state, fd 2 starts afresh
    assert len(t.handle(data(5, OUT, RESP, fd=1))) == 1
    assert t.handle(data(6, OUT, RESP, fd=2)) == []  # a response without its request
    assert t.stats()["evicted"] == 2  # fd 2's new state pushed out fd 3


def test_fd_reuse_after_close_and_accept_without_close() -> None:
    t, _ = tracker()
    first = feed(t, [ev(EventKind.ACCEPT, 1), data(2, IN, REQ), ev(EventKind.CLOSE, 3)])
    assert [(c.error_type, c.end_ns) for c in first] == [("closed_without_response", 3)]
    second = feed(t, [ev(EventKind.ACCEPT, 10), data(11, IN, REQ), data(12, OUT, RESP)])
    assert [(c.start_ns, c.error_type) for c in second] == [(11, None)]
    # the close was missed: a new ACCEPT on the same (pid, fd) finishes the old connection first
    third = feed(t, [data(20, IN, REQ), ev(EventKind.ACCEPT, 30), data(31, IN, REQ), data(32, OUT, RESP)])
    assert [(c.start_ns, c.end_ns, c.error_type) for c in third] == [
        (20, 30, "closed_without_response"), (31, 32, None),
    ]  # fmt: skip


def test_probe_disabled_at_runtime_mutes_its_connections() -> None:
    enabled: dict[str, tuple[ProtocolSpec, ...]] = {"specs": (http1.SPEC,)}
    rec = Recorder()
    t = ConnectionTracker(lambda: enabled["specs"], on_mute=rec)
    t.handle(data(1, IN, REQ))
    enabled["specs"] = ()
    assert t.handle(data(2, OUT, RESP)) != []  # within the refresh period the old settings hold
    late = 2 + SPECS_REFRESH_NS + 1
    assert t.handle(data(late, IN, REQ)) == []
    assert rec.muted == [(PID, FD)]
    assert t.handle(data(late + 1, IN, REQ, fd=9)) == []  # a new connection: nothing to detect with
    assert t.stats()["detected_http"] == 1


def test_exit_finishes_all_connections_of_the_process() -> None:
    t, _ = tracker()
    close_delimited = [c for _, c in chunks("py_close_delimited")]
    feed(t, [data(1, IN, close_delimited[0], fd=3), data(2, OUT, close_delimited[1], fd=3)])
    feed(t, [data(3, OUT, REQ, fd=4), data(4, IN, REQ, pid=77, fd=4)])
    calls = t.handle(ev(EventKind.EXIT, 10))
    assert sorted((c.conn.fd, c.role, c.end_ns, c.error_type) for c in calls if c.conn) == [
        (3, Role.SERVER, 2, None),  # the close-delimited body ended when the process died
        (4, Role.CLIENT, 10, "closed_without_response"),
    ]  # fmt: skip
    assert t.stats()["connections_open"] == 1  # pid 77 untouched


def test_upgrade_mutes_and_parser_counters_reach_stats() -> None:
    t, rec = tracker()
    events = [
        data(i, IN if side == "client" else OUT, c) for i, (side, c) in enumerate(chunks("py_upgrade_101"))
    ]
    calls = feed(t, events)
    assert [c.attributes["http.response.status_code"] for c in calls] == [101]
    assert rec.muted == [(PID, FD)]
    assert t.stats()["upgraded"] == 1
    t2, _ = tracker()
    feed(t2, [data(1, IN, REQ), data(2, OUT, b"\x00\x01garbage"), data(3, IN, REQ), data(4, OUT, RESP)])
    assert t2.stats()["parser_resyncs"] == 1


def test_unrelated_events_and_unknown_close() -> None:
    t, _ = tracker()
    assert t.handle(ev(EventKind.CLOSE, 1, fd=99)) == []
    assert t.handle(ev(EventKind.EXEC, 2)) == []
    assert t.handle(ev(EventKind.EXIT, 3, pid=1)) == []


# A datagram protocol that exists only in this test: each "ping" datagram is a request and the
# next datagram the answer. It shows the tracker passes each datagram's own peer along.
@dataclass
class PingParser:
    stats: ParserStats = field(default_factory=ParserStats)
    pending: list[Segment] = field(default_factory=list)

    def feed(self, segment: Segment) -> list[Call]:
        if segment.data.startswith(b"ping"):
            self.pending.append(segment)
            return []
        if not self.pending:
            return []
        req = self.pending.pop(0)
        role = Role.CLIENT if req.direction == Direction.EGRESS else Role.SERVER
        return [Call("ping", role, req.ts_ns, segment.ts_ns, f"ping from {req.peer_addr}:{req.peer_port}")]

    def close(self, ts_ns: int) -> list[Call]:
        return []


DATAGRAM_SPEC = ProtocolSpec(
    "ping", "ping", lambda d, _dir: d.startswith(b"ping"), PingParser, transports=("udp",)
)


def test_datagrams_carry_their_own_peer() -> None:
    t, _ = tracker(specs=(http1.SPEC, DATAGRAM_SPEC))

    def dgram(ts: int, direction: Direction, payload: bytes, addr: str, port: int) -> CaptureEvent:
        return ev(EventKind.DATA, ts, direction=direction, data=payload, size=len(payload), peer_addr=addr,
                  peer_port=port, sock_type=socket.SOCK_DGRAM, family=socket.AF_INET)  # fmt: skip

    calls = feed(t, [
        dgram(1, IN, b"ping", "127.0.0.2", 1111), dgram(2, OUT, b"pong", "127.0.0.2", 1111),
        dgram(3, IN, b"ping", "127.0.0.3", 2222), dgram(4, OUT, b"pong", "127.0.0.3", 2222),
    ])  # fmt: skip
    assert [(c.name, c.conn.transport, c.conn.peer) for c in calls if c.conn] == [
        ("ping from 127.0.0.2:1111", "udp", Endpoint("127.0.0.2", 1111)),
        ("ping from 127.0.0.3:2222", "udp", Endpoint("127.0.0.3", 2222)),
    ]  # fmt: skip


def test_calls_lost_in_the_kernel_reset_the_parser_before_the_next_event() -> None:
    """Request 1's response was shed (the socket's lost count went 0 -> 1): request 2's event says
    so, and request 2 then pairs with its own response instead of request 1 with it."""
    req2 = REQ.replace(b"a=1", b"a=2")
    t, _ = tracker()
    calls = feed(t, [
        ev(EventKind.ACCEPT, 10, family=socket.AF_INET, peer_addr="127.0.0.1", peer_port=51000),
        data(20, IN, REQ),
        data(40, IN, req2, lost=1),
        data(50, OUT, RESP, lost=1),
        ev(EventKind.CLOSE, 60),
    ])  # fmt: skip
    assert [(c.attributes["url.query"], c.start_ns, c.end_ns) for c in calls] == [("a=2&b=two", 40, 50)]
    stats = t.stats()
    assert (stats["lost_gaps"], stats["parser_unpaired"]) == (1, 1)


@dataclass
class KeepingParser:
    """Keeps every Segment it is fed (a stream protocol that exists only in this test)."""

    stats: ParserStats = field(default_factory=ParserStats)
    seen: list[Segment] = field(default_factory=list)

    def feed(self, segment: Segment) -> list[Call]:
        self.seen.append(segment)
        return []

    def close(self, ts_ns: int) -> list[Call]:
        return []


def test_a_big_calls_tail_reaches_segment_parsers_held_or_not() -> None:
    """A call bigger than the head copy: the Segment carries its tail and where it starts, also
    for the Segments held while the protocol was not yet decided."""
    parsers: list[KeepingParser] = []

    def make() -> KeepingParser:
        parsers.append(KeepingParser())
        return parsers[-1]

    spec = ProtocolSpec("keep", "keep", lambda d, _dir: d.startswith(b"KEEP"), make)
    t, _ = tracker(specs=(spec,))
    feed(t, [data(1, OUT, b"KE", size=9000, tail=b"end-of-first"),
             data(2, OUT, b"EP!", size=5000, tail=b"end-of-second")])  # fmt: skip
    (parser,) = parsers
    assert [(s.data, s.size, s.tail, s.tail_at) for s in parser.seen] == [
        (b"KE", 9000, b"end-of-first", 8988), (b"EP!", 5000, b"end-of-second", 4987),
    ]  # fmt: skip


def test_calls_in_flight_when_the_agent_stops_are_counted_not_reported() -> None:
    """At stop, a request read and not yet answered (a slow handler, a long stream) has no known
    outcome: it is counted, and no span says it failed. The daemon asked the tracker for a
    close_all that did not exist, so such calls vanished uncounted (acceptance run: a 3 s gRPC
    call in flight at SIGTERM left neither a span nor a count)."""
    t, _ = tracker()
    second = 8
    calls = feed(t, [
        opened(10),
        data(20, IN, REQ),
        data(30, OUT, RESP),  # answered: a span
        opened(40, fd=second),
        data(50, IN, REQ, fd=second),  # in flight at the stop
    ])  # fmt: skip
    assert [c.end_ns for c in calls] == [30]
    assert t.close_all(60) == 1
    stats = t.stats()
    assert (stats["in_flight_at_stop"], stats["calls"]) == (1, 1)
    assert (t.close_all(70), t.stats()["in_flight_at_stop"]) == (0, 1)  # counted once


def test_an_http1_socket_is_fed_its_parser_directly_and_other_parsers_through_feed_bytes() -> None:
    """The tracker calls an HTTP/1 parser natively (``ConnState.http1``, nineteenth round
    (continued) in bench/README.md), any other stream parser through its bound ``feed_bytes``:
    both give the same Calls, and a closed connection's parser counters still reach the stats
    when they counted something (a connection that counted nothing is skipped at its close)."""
    t, _ = tracker()
    calls = feed(t, [opened(1), data(2, IN, REQ), data(3, OUT, RESP)])
    state = t._conns[PID << 32 | FD]
    assert state.http1 is state.parser and isinstance(state.parser, http1.Http1Parser)
    assert [(c.name, c.attributes["http.response.status_code"]) for c in calls] == [("GET", 200)]

    class Wrapped:  # a stream parser with feed_bytes that is not an Http1Parser
        def __init__(self) -> None:
            self.inner = http1.Http1Parser()
            self.stats = self.inner.stats
            self.feed, self.feed_bytes, self.close = self.inner.feed, self.inner.feed_bytes, self.inner.close

    t2, _ = tracker(specs=(ProtocolSpec("other", "other", http1.looks_like, Wrapped),))  # type: ignore[arg-type]
    calls2 = feed(t2, [opened(1), data(2, IN, REQ), data(3, OUT, RESP)])
    state2 = t2._conns[PID << 32 | FD]
    assert state2.http1 is None and state2.feed_bytes is not None
    assert [(c.name, c.attributes["http.response.status_code"]) for c in calls2] == [("GET", 200)]

    feed(t, [ev(EventKind.CLOSE, 4)])  # counted nothing
    feed(t, [opened(5, fd=8), data(6, IN, REQ, fd=8), data(7, OUT, b"\x00\x01garbage", fd=8),
             ev(EventKind.CLOSE, 8, fd=8)])  # fmt: skip
    stats = t.stats()
    assert (stats["closed"], stats["parser_resyncs"], stats["parser_unpaired"]) == (2, 1, 1)


def test_adopted_ipv6_socket_keeps_an_unknown_peer_unknown() -> None:
    """A socket received from another process (bpf/capture.c: adopt) with a true IPv6 peer: its
    events carry the peer's port but no address (decode: ""). No peer, at the first event or later,
    rather than one with an empty address."""
    t, _ = tracker()
    six = {"peer_addr": "", "peer_port": 55684, "local_addr": "::", "local_port": 8080}
    events = [data(20, IN, REQ, **six), data(30, OUT, RESP, **six), data(40, IN, REQ, **six),
              data(50, OUT, RESP, **six)]  # fmt: skip
    for e in events:
        e.family = socket.AF_INET6
    calls = feed(t, events)
    assert len(calls) == 2 and [c.conn.peer for c in calls if c.conn is not None] == [None, None]
