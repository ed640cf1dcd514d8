"""Hypothesis: no input makes the HTTP/2 or DNS parsers (or their prefilters) raise, and memory
stays bounded. Inputs: random bytes, and real recordings cut, truncated and corrupted at random."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.model import Direction, Segment
from hostagent.protocols import dns, http2
from tests.support.h2_recorder import in_16k_frames, load_chunks, segments

FIX = Path(__file__).resolve().parents[1] / "fixtures"
GRPC = next(iter(segments(load_chunks(FIX / "http2" / "grpc_shapes.json"), "client").values()))
BIG = next(iter(segments(load_chunks(FIX / "http2" / "grpc_big.json"), "server").values()))
DNS_SEGS = [
    Segment(
        Direction.EGRESS if s["dir"] == "egress" else Direction.INGRESS,
        bytes.fromhex(s["hex"]),
        len(s["hex"]) // 2,
        s["ts"],
    )
    for s in json.loads((FIX / "dns" / "udp_unconnected.json").read_text())["segments"]
]

random_segments = st.lists(
    st.tuples(st.booleans(), st.binary(max_size=120), st.integers(0, 300)),
    max_size=25,
)


def _segs(items: list[tuple[bool, bytes, int]]) -> list[Segment]:
    return [
        Segment(Direction.EGRESS if e else Direction.INGRESS, d, len(d) + extra, i * 1000)
        for i, (e, d, extra) in enumerate(items)
    ]


@settings(max_examples=150, deadline=None)
@given(random_segments)
def test_http2_random_segments(items: list[tuple[bool, bytes, int]]) -> None:
    p = http2.Http2Parser()
    for s in _segs(items):
        p.feed(s)
        http2.looks_like(s.data, s.direction)
    p.close(10**9)


@settings(max_examples=150, deadline=None)
@given(random_segments)
def test_http2_after_preface(items: list[tuple[bool, bytes, int]]) -> None:
    p = http2.Http2Parser()
    p.feed(Segment(Direction.EGRESS, http2.PREFACE, len(http2.PREFACE), 0))
    for s in _segs(items):
        p.feed(s)
    p.close(10**9)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_http2_corrupted_recording(data: st.DataObject) -> None:
    """A real gRPC conversation with random bytes flipped, tails dropped and Segments removed."""
    p = http2.Http2Parser()
    for seg in GRPC:
        if data.draw(st.integers(0, 9)) == 0:
            continue  # a lost Segment
        raw = bytearray(seg.data)
        for _ in range(data.draw(st.integers(0, 3))):
            if raw:
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        keep = data.draw(st.integers(0, len(raw)))
        p.feed(replace(seg, data=bytes(raw[:keep])))
    p.close(10**12)
    assert len(p._streams) <= 1024


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_http2_big_writes_cut_with_tails(data: st.DataObject) -> None:
    """The big-message recording (DATA frames whole or in 16 KB ones) cut as the kernel does at a
    random head and tail size, with bytes flipped: neither the frame walk into a tail nor the
    search for the frames ending one raises, and memory stays bounded."""
    p = http2.Http2Parser()
    for seg in BIG:
        raw = bytearray(in_16k_frames(seg.data) if data.draw(st.booleans()) else seg.data)
        for _ in range(data.draw(st.integers(0, 3))):
            if raw:
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        head, tail = data.draw(st.integers(0, 5000)), data.draw(st.integers(0, 600))
        cut = bytes(raw[max(head, len(raw) - tail) :]) if len(raw) > head else b""
        p.feed(replace(seg, data=bytes(raw[:head]), size=len(raw), tail=cut))
    p.close(10**12)
    assert len(p._streams) <= 1024


@settings(max_examples=150, deadline=None)
@given(random_segments, st.sampled_from(["auto", "udp", "tcp"]))
def test_dns_random_segments(items: list[tuple[bool, bytes, int]], transport: str) -> None:
    p = dns.DnsParser(transport)
    for s in _segs(items):
        p.feed(s)
        dns.looks_like(s.data, s.direction)
    p.close(10**9)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_dns_corrupted_recording(data: st.DataObject) -> None:
    p = dns.DnsParser(max_pending=4)
    for seg in DNS_SEGS:
        raw = bytearray(seg.data)
        for _ in range(data.draw(st.integers(0, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        p.feed(replace(seg, data=bytes(raw[: data.draw(st.integers(0, len(raw)))])))
        assert len(p._pending) <= 4
    p.close(10**12)
