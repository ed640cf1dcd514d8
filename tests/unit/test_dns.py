"""DNS over UDP and TCP, from bytes recorded against dnsmasq (tests/fixtures/dns, recorded by
tests/support/dns_server.py); the client's recording is also replayed as dnsmasq's side."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytest

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols import dns
from hostagent.protocols.dns import DnsParser, looks_like, parse_message, read_name

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dns"
PORT = 18621  # dnsmasq's port when the fixtures were recorded

# Captured: the A query for svc.test (udp_unconnected.json, first datagram)
QUERY_A = bytes.fromhex(
    "0a01"  # id 0x0a01
    "0100"  # flags: QR=0 (query), opcode QUERY, RD=1
    "0001 0000 0000 0000".replace(" ", "")  # QDCOUNT=1, AN=0, NS=0, AR=0
    + "03737663047465737400"  # QNAME 3"svc" 4"test" 0
    "0001"  # QTYPE A
    "0001"  # QCLASS IN
)
# Captured: dnsmasq's answer to it
ANSWER_A = bytes.fromhex(
    "0a01"  # same id
    "8580"  # QR=1, AA=1, RD=1, RA=1, RCODE=0 NOERROR
    "0001000100000000"  # QD=1, AN=1, NS=0, AR=0
    "0373766304746573740000010001"  # the question again
    "c00c"  # NAME: compression pointer to offset 12 (the question's name)
    "0001" "0001"  # TYPE A, CLASS IN
    "00000000"  # TTL 0 (dnsmasq --address)
    "0004" "7f000005"  # RDLENGTH 4, 127.0.0.5
)  # fmt: skip


def load(name: str, view: str = "client") -> list[Segment]:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    out = []
    for s in doc["segments"]:
        egress = (s["dir"] == "egress") == (view == "client")
        peer = s["peer"] or ["", 0]
        data = bytes.fromhex(s["hex"])
        out.append(Segment(Direction.EGRESS if egress else Direction.INGRESS, data, len(data), s["ts"], *peer))
    return out


def run(segs: list[Segment], parser: Optional[DnsParser] = None, close_at: int = 10**15) -> list[Call]:
    parser = parser or DnsParser()
    calls: list[Call] = []
    for s in segs:
        calls += parser.feed(s)
    return calls + parser.close(close_at)


def summary(c: Call) -> tuple[Any, ...]:
    a = c.attributes
    return (
        c.name,
        a["dns.question.name"],
        a.get("hostagent.dns.response_code"),
        a.get("hostagent.dns.answer_count"),
        a.get("dns.answers"),
        c.error_type,
        c.request_size,
        c.response_size,
    )


def test_fixture_bytes_are_what_the_table_says() -> None:
    segs = load("udp_unconnected")
    assert (segs[0].data, segs[1].data) == (QUERY_A, ANSWER_A)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (QUERY_A, (0x0A01, False, 0, "svc.test", 1, 0, ())),
        (ANSWER_A, (0x0A01, True, 0, "svc.test", 1, 1, ("127.0.0.5",))),
        (ANSWER_A[:-3], (0x0A01, True, 0, "svc.test", 1, 1, ())),  # rdata not captured
    ],
)
def test_parse_message(raw: bytes, expected: tuple[Any, ...]) -> None:
    m = parse_message(raw)
    assert m is not None
    assert (m.id, m.is_response, m.rcode, m.qname, m.qtype, m.ancount, m.answers) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (QUERY_A[:14], "question cut"),
        (QUERY_A[:4] + b"\x00\x02" + QUERY_A[6:], "two questions"),
        (QUERY_A[:12] + b"\xc0\x0c" + QUERY_A[-4:], "pointer to itself"),
        (QUERY_A[:12] + b"\xc0\x20" + QUERY_A[-4:], "pointer forwards"),
        (QUERY_A[:12] + b"\x80abc\x00" + QUERY_A[-4:], "reserved label type"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP"),
    ],
)
def test_rejects(raw: bytes, why: str) -> None:
    assert parse_message(raw) is None, why
    assert not looks_like(raw, Direction.EGRESS), why


def test_names_escape_and_pointer_chains() -> None:
    msg = b"\x00" * 12 + b"\x03a.b\x02\x00\xff\x00" + b"\xc0\x0c"
    assert read_name(msg, 12) == ("a\\046b.\\000\\255", 20)
    assert read_name(msg, 20) == ("a\\046b.\\000\\255", 22)  # the pointer is 2 bytes
    assert read_name(b"\x00" * 12 + b"\x00", 12) == (".", 13)


UNCONNECTED = [
    ("DNS A", "svc.test", "NOERROR", 1, ("127.0.0.5",), None, 26, 42),
    ("DNS AAAA", "svc.test", "NXDOMAIN", 0, None, "NXDOMAIN", 26, 26),  # dnsmasq --address: no AAAA
    ("DNS A", "nope.test", "NXDOMAIN", 0, None, "NXDOMAIN", 27, 27),
    ("DNS AAAA", "v4only.test", "NOERROR", 0, None, None, 29, 29),  # NODATA is not an error
    ("DNS A", "outside.invalid", "REFUSED", 0, None, "REFUSED", 33, 33),  # no upstream
    # glibc-style A + AAAA sent back to back with one id: paired by id and question
    ("DNS A", "dual.test", "NOERROR", 1, ("127.0.0.6",), None, 27, 43),
    ("DNS AAAA", "dual.test", "NOERROR", 1, ("::6",), None, 27, 55),
]


@pytest.mark.parametrize("view", ["client", "server"])
def test_unconnected_udp(view: str) -> None:
    segs = load("udp_unconnected", view)
    calls = run(segs)
    assert [summary(c) for c in calls] == UNCONNECTED
    assert {c.role for c in calls} == {Role.CLIENT if view == "client" else Role.SERVER}
    assert all(c.protocol == "dns" for c in calls)
    assert calls[0].attributes["network.peer.address"] == "127.0.0.1"
    assert calls[0].attributes["network.peer.port"] == PORT
    assert (calls[0].start_ns, calls[0].end_ns) == (segs[0].ts_ns, segs[1].ts_ns)
    assert calls[1].status_message == "NXDOMAIN"


def test_connected_udp_has_no_peer_and_keeps_the_name_as_sent() -> None:
    calls = run(load("udp_connected"))
    assert [summary(c) for c in calls] == [
        ("DNS AAAA", "dual.test", "NOERROR", 1, ("::6",), None, 27, 55),
        ("DNS A", "SvC.TeSt", "NOERROR", 1, ("127.0.0.5",), None, 26, 42),  # 0x20-style case kept
    ]
    assert all("network.peer.address" not in c.attributes for c in calls)


def test_tcp_and_its_detection() -> None:
    parser = DnsParser()
    calls = run(load("tcp"), parser)
    assert parser.transport == "tcp"
    assert [summary(c) for c in calls] == [
        ("DNS A", "svc.test", "NOERROR", 1, ("127.0.0.5",), None, 26, 42),
        ("DNS AAAA", "nope.test", "NXDOMAIN", 0, None, "NXDOMAIN", 27, 27),
    ]


def test_tcp_length_prefix_in_its_own_segment_and_bytewise() -> None:
    segs = load("tcp")
    bytewise = [replace(s, data=s.data[i : i + 1], size=1) for s in segs for i in range(len(s.data))]
    assert [summary(c) for c in run(bytewise, DnsParser("tcp"))] == [summary(c) for c in run(segs)]
    split = [
        x
        for s in segs
        for x in (replace(s, data=s.data[:2], size=2), replace(s, data=s.data[2:], size=len(s.data) - 2))
    ]
    parser = DnsParser()
    assert [summary(c) for c in run(split, parser)] == [summary(c) for c in run(segs)]
    assert parser.transport == "tcp"


def test_truncated_answer_still_pairs() -> None:
    segs = load("udp_unconnected")[:2]
    cut = [segs[0], replace(segs[1], data=segs[1].data[:30])]  # 42 bytes moved, 30 captured
    parser = DnsParser("udp")
    (call,) = run(cut, parser)
    assert summary(call) == ("DNS A", "svc.test", "NOERROR", 1, None, None, 26, 42)
    assert parser.stats.truncated == 1


def test_unanswered_query_times_out() -> None:
    segs = load("udp_unconnected")
    parser = DnsParser(timeout_ns=1_000_000_000)
    assert parser.feed(segs[0]) == []
    late = replace(segs[4], ts_ns=segs[0].ts_ns + 2_000_000_000)  # the nope.test query
    (timed_out,) = parser.feed(late)
    assert (timed_out.error_type, timed_out.status_message) == ("timeout", "no response")
    assert timed_out.end_ns - timed_out.start_ns == 1_000_000_000
    # the late answer to the timed-out query is unpaired; the pending nope.test query ends at close
    assert parser.feed(replace(segs[1], ts_ns=late.ts_ns + 1)) == []
    assert parser.stats.unpaired == 1
    (closed,) = parser.close(late.ts_ns + 5)
    assert (closed.attributes["dns.question.name"], closed.error_type, closed.end_ns) == (
        "nope.test", "timeout", late.ts_ns + 5,
    )  # fmt: skip


def test_retransmitted_query_is_one_call() -> None:
    segs = load("udp_unconnected")
    parser = DnsParser()
    calls = run([segs[0], replace(segs[0], ts_ns=segs[0].ts_ns + 10), segs[1]], parser)
    assert len(calls) == 1 and calls[0].start_ns == segs[0].ts_ns
    assert parser.stats.extra == {"retransmits": 1}


def test_looks_like_and_spec() -> None:
    assert looks_like(QUERY_A, Direction.EGRESS)
    assert looks_like(ANSWER_A, Direction.INGRESS)
    assert looks_like(load("tcp")[0].data, Direction.EGRESS)
    assert (dns.SPEC.name, dns.SPEC.probe, dns.SPEC.transports) == ("dns", "dns", ("udp", "tcp"))
    assert isinstance(dns.SPEC.new_parser(), DnsParser)


def _tracker_calls(segs: list[Segment], view: str) -> list[Call]:
    """The capture stage's view: one TCP socket's events, the parser made for its transport."""
    import socket

    from hostagent.capture.tracker import ConnectionTracker
    from hostagent.model import CaptureEvent, EventKind
    from hostagent.protocols.registry import for_probes

    specs = for_probes(frozenset({"dns", "http", "redis"}))
    tracker = ConnectionTracker(lambda: specs)
    calls: list[Call] = []
    for s in segs:
        calls += tracker.handle(CaptureEvent(
            EventKind.DATA, s.ts_ns, 7, 7, 3, direction=s.direction, size=s.size, data=s.data,
            family=socket.AF_INET, sock_type=socket.SOCK_STREAM, peer_addr="127.0.0.1",
            peer_port=53 if view == "client" else 40000))  # fmt: skip
    calls += tracker.handle(CaptureEvent(EventKind.CLOSE, 10**15, 7, 7, 3))
    return calls


@pytest.mark.parametrize("view", ["client", "server"])
def test_tcp_socket_read_a_byte_at_a_time_or_written_two_queries_at_once_is_tcp(view: str) -> None:
    """Seen live with dnsmasq and a pipelining client: dnsmasq's TCP child reads the length prefix
    one byte at a time, and a client may write two queries in one write; judged from the first
    Segment both looked like UDP (every dnsmasq span "timeout", the pipelined client's queries
    gone). The capture stage knows the socket is TCP and makes the parser for it."""
    segs = load("tcp", view)
    want = [summary(c) for c in run(load("tcp", view))]
    prefix_bytewise = [replace(s, data=piece, size=len(piece))
                       for s in segs for piece in (s.data[:1], s.data[1:2], s.data[2:])]  # as dnsmasq reads
    assert [summary(c) for c in _tracker_calls(prefix_bytewise, view)] == want
    queries = [s for s in segs if s.direction == segs[0].direction]
    answers = [s for s in segs if s.direction != segs[0].direction]
    pipelined = [replace(queries[0], data=b"".join(q.data for q in queries), size=sum(q.size for q in queries)),
                 *answers]
    got = _tracker_calls(pipelined, view)
    assert [(c.name, c.attributes["dns.question.name"]) for c in got] == [(w[0], w[1]) for w in want]
