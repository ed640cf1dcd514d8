"""HTTP/2 framing: frame headers and reassembly, from bytes captured off grpcio and curl->nginx."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostagent.protocols.http2_frames import (
    DATA,
    GOAWAY,
    HEADERS,
    LOST_AFTER,
    LOST_BEFORE,
    PING,
    SETTINGS,
    WINDOW_UPDATE,
    Frame,
    FrameReader,
    error_code_name,
    frames_ending_at,
    parse_header,
    plausible_header,
)
from tests.support.h2_recorder import in_16k_frames, load_chunks

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


# --- a big write's tail (bpf/events.h: the head, then the call's last bytes) ---------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "http2"
HEAD, TAIL = 4096, 512  # payload_bytes as the daemon tests run it; TAIL_MAX of bpf/events.h


def captured(write: bytes, head: int = HEAD, tail: int = TAIL) -> tuple[bytes, int, bytes]:
    """(data, size, tail) the kernel hands on for one call of these bytes."""
    if len(write) <= head:
        return write, len(write), b""
    return write[:head], len(write), write[max(head, len(write) - tail) :]


def big_write(direction: str) -> bytes:
    """grpcio's one sendmsg of a 20 KB message (tests/fixtures/http2/grpc_big.json). Client:
    SETTINGS ACK, HEADERS, WINDOW_UPDATE, DATA(END_STREAM) of 20009, WINDOW_UPDATE(0). Server:
    HEADERS, DATA of 20011, trailers HEADERS(END_STREAM), WINDOW_UPDATE(0)."""
    return max((c.data for c in load_chunks(FIXTURES / "grpc_big.json") if c.dir == direction), key=len)


def shape(frames: list[Frame]) -> list[tuple[int, int, int, int, bool, bool]]:
    return [(f.type, f.flags, f.stream_id, f.length, f.complete, f.after_gap) for f in frames]


SERVER = big_write("s2c")
CLIENT = big_write("c2s")
WU0 = (WINDOW_UPDATE, 0, 0, 4, True, False)
TRAILERS = (HEADERS, 5, 1, 30, True, False)


def _looks_like_a_chain(write: bytes) -> bytes:
    """``write`` with a frame header planted in its last DATA payload whose frame ends exactly at
    the write's end: a second chain, so the end of the tail cannot be told with certainty."""
    at = len(write) - 13 - 39 - 100  # 100 bytes before the trailers, inside the DATA payload
    fake = (len(write) - at - 9).to_bytes(3, "big") + bytes([DATA, 0]) + (1).to_bytes(4, "big")
    return write[:at] + fake + write[at + 9 :]


@pytest.mark.parametrize(
    ("write", "streams", "want", "lost"),
    [
        # grpcio's reply: the DATA frame's length tells where the trailers start, in the tail
        (SERVER, {1}, [(HEADERS, 4, 1, 78, True, False), (DATA, 0, 1, 20011, False, False), TRAILERS, WU0], 0),
        # grpcio's request: the WINDOW_UPDATE(0) after its DATA(END_STREAM)
        (CLIENT, {1}, [(SETTINGS, 1, 0, 0, True, False), (HEADERS, 4, 1, 218, True, False),
                       (WINDOW_UPDATE, 0, 1, 4, True, False), (DATA, 1, 1, 20009, False, False), WU0], 0),
        # 16 KB frames: the second DATA frame's header is in the gap; the frames ending the write
        # are found in the tail (stream 1 opened by this write's HEADERS)
        (in_16k_frames(SERVER), set(), [(HEADERS, 4, 1, 78, True, False), (DATA, 0, 1, 16384, False, False),
                                        (HEADERS, 5, 1, 30, True, True), WU0], 0),
        # the response HEADERS written before: stream 1 must be known open
        (in_16k_frames(SERVER, skip_headers=True), {1}, [(DATA, 0, 1, 16384, False, False),
                                                         (HEADERS, 5, 1, 30, True, True), WU0], 0),
        # the trailers' stream is not open: not the WINDOW_UPDATE after them alone either (a
        # header block would go by unseen)
        (in_16k_frames(SERVER, skip_headers=True), {3}, [(DATA, 0, 1, 16384, False, False)], LOST_AFTER),
        # payload bytes that look like a frame ending the write too: two chains, neither taken
        (_looks_like_a_chain(in_16k_frames(SERVER)), {1}, [(HEADERS, 4, 1, 78, True, False),
                                                           (DATA, 0, 1, 16384, False, False)], LOST_AFTER),
    ],
    ids=["grpcio-reply", "grpcio-request", "16k-frames", "16k-frames-open-stream", "16k-frames-unknown-stream",
         "ambiguous"],
)
def test_frames_after_the_cut_come_from_the_tail(write: bytes, streams: set[int],
                                                 want: list[tuple[int, int, int, int, bool, bool]],
                                                 lost: int) -> None:
    reader = FrameReader()
    frames, got_lost = reader.feed(*captured(write), streams=streams)
    assert (shape(frames), got_lost) == (want, lost)
    assert reader.in_sync == (not lost)
    for f in frames:  # the whole ones are exactly bytes that were written
        if f.complete:
            header = f.length.to_bytes(3, "big") + bytes([f.type, f.flags]) + f.stream_id.to_bytes(4, "big")
            assert header + f.payload in write


def test_without_a_tail_sync_is_lost_as_before() -> None:
    reader = FrameReader()
    data, size, _ = captured(SERVER)
    frames, lost = reader.feed(data, size)
    assert shape(frames) == [(HEADERS, 4, 1, 78, True, False), (DATA, 0, 1, 20011, False, False)]
    assert lost == LOST_AFTER and not reader.in_sync


def test_a_tail_right_after_the_head_is_read_as_one() -> None:
    reader = FrameReader()
    frames, lost = reader.feed(*captured(SERVER, head=19800, tail=512))  # 359 bytes of tail, no gap
    assert lost == 0
    assert shape(frames) == [(HEADERS, 4, 1, 78, True, False), (DATA, 0, 1, 20011, True, False), TRAILERS, WU0]


@pytest.mark.parametrize("read", [8192, 4096 + 512 + 1, 1000, 20159])
def test_reads_of_a_big_write_keep_sync_through_their_tails(read: int) -> None:
    """The reader's side: grpcio reads 8 KB at a time. The frame the cut went through is skipped
    by its length across reads; the next frame starts in a later read's head or tail."""
    reader = FrameReader()
    frames: list[Frame] = []
    for at in range(0, len(SERVER), read):
        got, lost = reader.feed(*captured(SERVER[at : at + read]), streams={1})
        assert lost == 0, at
        frames += got
    assert [f for f in shape(frames) if f[0] != DATA] == [(HEADERS, 4, 1, 78, True, False), TRAILERS, WU0]
    assert sum(f.length for f in frames if f.type == DATA) == 20011  # one DATA frame, once


def test_sync_is_regained_at_frames_that_end_a_big_write() -> None:
    reader = FrameReader()
    reader.lose()
    frames, lost = reader.feed(*captured(in_16k_frames(SERVER, skip_headers=True)[200:]), streams={1})
    assert lost == LOST_BEFORE and reader.in_sync
    assert shape(frames) == [(HEADERS, 5, 1, 30, True, False), WU0]


@pytest.mark.parametrize(
    ("tail", "streams", "start"),
    [
        (bytes.fromhex("00000408000000000000000005"), set(), 0),  # a WINDOW_UPDATE(0) alone
        (b"RR" + bytes.fromhex("00000408000000000000000005"), set(), 2),
        (b"RR" + bytes.fromhex("00000408000000000300000005"), set(), -1),  # stream 3 is not open
        (bytes.fromhex("000001010500000003") + b"R" + bytes.fromhex("00000408000000000000000005"), set(), -1),
        (b"RR" + bytes.fromhex("00000408000000000300000005"), {3}, 2),
        (b"RR" + bytes.fromhex("00000408000000000000000005") + b"R", set(), -1),  # not at the end
        (bytes.fromhex("0000080600000000000102030405060708"), set(), 0),  # PING
        (bytes.fromhex("0000080680000000000102030405060708"), set(), -1),  # undefined flag
        (b"", set(), -1),
    ],
)
def test_frames_ending_at(tail: bytes, streams: set[int], start: int) -> None:
    assert frames_ending_at(tail, streams) == start
