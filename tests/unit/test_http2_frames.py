"""HTTP/2 framing: frame headers and reassembly, from bytes captured off grpcio and curl->nginx."""

from __future__ import annotations

import pytest

from hostagent.protocols.http2_frames import (
    DATA,
    GOAWAY,
    HEADERS,
    PING,
    SETTINGS,
    WINDOW_UPDATE,
    FrameReader,
    error_code_name,
    parse_header,
    plausible_header,
)

# Frame headers captured from grpcio 1.85 (tests/fixtures/http2/grpc_shapes.json).
CAPTURED_HEADERS = [
    # length=36 (00 00 24) type=SETTINGS (04) flags=0 stream=0: the client's first SETTINGS
    ("000024040000000000", (36, SETTINGS, 0x0, 0)),
    # length=4 type=WINDOW_UPDATE (08) flags=0 stream=0: connection window
    ("000004080000000000", (4, WINDOW_UPDATE, 0x0, 0)),
    # length=0 type=SETTINGS flags=ACK (01) stream=0
    ("000000040100000000", (0, SETTINGS, 0x1, 0)),
    # length=218 (00 00 da) type=HEADERS (01) flags=END_HEADERS (04) stream=1: Unary request
    ("0000da010400000001", (218, HEADERS, 0x4, 1)),
    # length=12 type=DATA (00) flags=END_STREAM (01) stream=1: one 7-byte protobuf message
    ("00000c000100000001", (12, DATA, 0x1, 1)),
    # length=30 type=HEADERS flags=END_STREAM|END_HEADERS (05) stream=1: trailers (grpc-status)
    ("00001e010500000001", (30, HEADERS, 0x5, 1)),
    # length=8 type=PING (06) flags=0 stream=0: grpcio's BDP ping
    ("000008060000000000", (8, PING, 0x0, 0)),
]


@pytest.mark.parametrize(("hexbytes", "expected"), CAPTURED_HEADERS)
def test_captured_headers_parse_and_are_plausible(hexbytes: str, expected: tuple[int, int, int, int]) -> None:
    raw = bytes.fromhex(hexbytes)
    assert parse_header(raw) == expected
    assert plausible_header(raw)


@pytest.mark.parametrize(
    ("hexbytes", "why"),
    [
        ("000024040000000001", "SETTINGS on stream 1"),
        ("00000c000100000000", "DATA on stream 0"),
        ("000004080000000000"[:16], "only 8 bytes"),
        ("00000c0a0000000001", "unknown type 0x0a"),
        ("00000c004000000001", "DATA with an undefined flag 0x40"),
        ("00000c000180000001", "reserved bit set"),
        ("004001000000000001", "length 16385 > default max frame size"),
        ("000005080000000000", "WINDOW_UPDATE must be 4 bytes"),
        ("000007040000000000", "SETTINGS length not a multiple of 6"),
        ("000006040100000000", "SETTINGS ACK with a payload"),
        ("000004070000000000", "GOAWAY shorter than 8"),
        ("474554202f20485454", "ASCII 'GET / HTT' (HTTP/1.1)"),
    ],
)
def test_implausible_headers(hexbytes: str, why: str) -> None:
    assert not plausible_header(bytes.fromhex(hexbytes)), why


def _frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def test_reader_joins_frames_split_byte_by_byte() -> None:
    stream = _frame(DATA, 0, 1, b"abc") + _frame(PING, 0, 0, b"12345678") + _frame(DATA, 1, 1, b"")
    reader = FrameReader()
    frames = []
    for i in range(len(stream)):
        got, lost = reader.feed(stream[i : i + 1], 1)
        assert not lost
        frames += got
    assert [(f.type, f.flags, f.stream_id, f.length, f.payload) for f in frames] == [
        (DATA, 0, 1, 3, b"abc"),
        (PING, 0, 0, 8, b"12345678"),
        (DATA, 1, 1, 0, b""),
    ]
    assert all(f.complete for f in frames)


def test_uncaptured_tail_inside_a_frame_keeps_sync() -> None:
    """A 100-byte DATA frame of which only 20 payload bytes were captured: the frame comes out
    incomplete with its real length, the next Segment's uncaptured remainder is skipped by count,
    and the frame after it is read normally."""
    big = _frame(DATA, 0, 3, bytes(range(100)))
    reader = FrameReader()
    frames, lost = reader.feed(big[:29], 60)  # header + 20 payload bytes captured, 60 moved
    assert not lost
    assert [(f.length, f.payload, f.complete) for f in frames] == [(100, bytes(range(20)), False)]
    rest = big[60:] + _frame(GOAWAY, 0, 0, bytes(8))
    frames, lost = reader.feed(rest[:10], len(rest))  # 10 captured, but the GOAWAY header is lost
    assert lost and frames == []
    assert not reader.in_sync
    frames, lost = reader.feed(b"garbage!!", 9)  # not a frame header: still waiting
    assert lost and frames == [] and reader.resyncs == 1
    frames, lost = reader.feed(_frame(PING, 1, 0, bytes(8)), 17)  # a plausible header: resume
    assert lost  # what went by between is unknown
    assert [(f.type, f.flags) for f in frames] == [(PING, 1)]
    assert reader.in_sync


def test_uncaptured_bytes_ending_exactly_at_a_frame_boundary() -> None:
    stream = _frame(DATA, 0, 1, bytes(50)) + _frame(DATA, 1, 1, b"xy")
    reader = FrameReader()
    frames, lost = reader.feed(stream[:12], 59)  # first frame: 3 of 50 payload bytes captured
    assert not lost and [(f.length, len(f.payload), f.complete) for f in frames] == [(50, 3, False)]
    frames, lost = reader.feed(stream[59:], len(stream) - 59)
    assert not lost and [(f.flags, f.payload) for f in frames] == [(1, b"xy")]


@pytest.mark.parametrize(("code", "name"), [(0, "NO_ERROR"), (7, "REFUSED_STREAM"), (8, "CANCEL"), (99, "0x63")])
def test_error_code_names(code: int, name: str) -> None:
    assert error_code_name(code) == name
