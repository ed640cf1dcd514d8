"""Hypothesis: the HTTP/1 parser never raises, keeps its memory bounded, and does not care how
the bytes of a recorded exchange are split into reads."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostagent.model import Direction, Segment
from hostagent.protocols.http1 import BODY_LIMIT, MAX_HEAD, MAX_LINE, MAX_PENDING, Http1Parser
from tests.fixtures.http1.load import segments

BOUND = 2 * MAX_HEAD + 2 * MAX_LINE + (MAX_PENDING + 1) * BODY_LIMIT

# Raw material biased towards HTTP: pieces of real messages mixed with arbitrary bytes.
PIECES = st.sampled_from([
    b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n\r\n", b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n", b"\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n", b"HEAD /x HTTP/1.0\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n", b"CONNECT h:1 HTTP/1.1\r\n", b"ffffffffffffffff\r\n",
    b"G", b"\r",
])  # fmt: skip
CHUNK = st.one_of(st.binary(max_size=64), PIECES)
SEGMENT = st.tuples(
    st.sampled_from([Direction.EGRESS, Direction.INGRESS]),
    st.lists(CHUNK, max_size=6).map(b"".join),
    st.integers(min_value=0, max_value=5000),  # uncaptured bytes after the captured prefix
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(SEGMENT, max_size=40))
def test_any_input_never_raises_and_stays_bounded(segs: list[tuple[Direction, bytes, int]]) -> None:
    parser = Http1Parser()
    for ts, (direction, data, extra) in enumerate(segs):
        for call in parser.feed(Segment(direction, data, len(data) + extra, ts)):
            assert call.start_ns <= call.end_ns
            assert len(call.request_body) <= BODY_LIMIT and len(call.response_body) <= BODY_LIMIT
        assert parser.buffered() <= BOUND
    parser.close(len(segs))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["py_chunked_trailer", "nginx_pipelined", "py_expect_100", "nginx_keepalive_3"]),
    st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=50),
)
def test_any_split_of_a_recorded_exchange_gives_the_same_calls(fixture: str, cuts: list[int]) -> None:
    def run(segs: list[Segment]) -> list:
        parser = Http1Parser()
        out = [c for s in segs for c in parser.feed(s)]
        return out + parser.close(10**9)

    whole = segments(fixture)
    split: list[Segment] = []
    sizes = itertools.cycle(cuts)
    for seg in whole:
        pos = 0
        while pos < len(seg.data):
            step = next(sizes)
            piece = seg.data[pos : pos + step]
            split.append(Segment(seg.direction, piece, len(piece), seg.ts_ns))
            pos += step
    assert run(split) == run(whole)


def test_a_response_head_buffered_before_its_request_never_ends_the_span_early() -> None:
    # Found by the property above: a response head began (ts 0) before the request (ts 1); both
    # heads were then cut short by uncaptured bytes and paired.
    parser = Http1Parser()
    calls = []
    for ts, (direction, data, extra) in enumerate([(Direction.EGRESS, b"HTTP/1. 101 ", 0),
                                                   (Direction.INGRESS, b"A \x00", 1),
                                                   (Direction.EGRESS, b"\x00", 1)]):
        calls += parser.feed(Segment(direction, data, len(data) + extra, ts))
    assert [(c.start_ns, c.end_ns) for c in calls] == [(1, 1)]
