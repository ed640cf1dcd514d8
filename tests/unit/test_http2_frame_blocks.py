"""HTTP/2 frame blocks (bpf/events.h struct h2_block): the frames the kernel followed through a big
call, read by FrameReader.feed_block and the HTTP/2 parser.

The bytes are a real capture (hostagent's BpfCapture, payload_bytes 4096) of grpcio 1.85.3: a
channel with four concurrent ~100 KB unary calls to /acc.test.v1.Shop/GetItem, each with metadata
x-i: big0.<n>. The client's second sendmsg moved 131094 bytes: stream 1's HEADERS and the start of
its 100006-byte DATA frame are the head (4096 bytes, the rest of it 'D's), stream 3's HEADERS lie
at byte 100263, in neither the head nor a 512-byte tail.
"""

from __future__ import annotations

import struct

import pytest

from hostagent.model import Direction, EventKind, Segment
from hostagent.probes import events as ev
from hostagent.probes.decode import TAIL_IS_FRAMES
from hostagent.protocols.http2 import Http2Parser
from hostagent.protocols.http2_frames import (
    CONTINUATION,
    DATA,
    HEADERS,
    LOST_AFTER,
    LOST_BEFORE,
    WINDOW_UPDATE,
    Frame,
    FrameReader,
)  # fmt: skip

# The client's first write: preface, SETTINGS (6 settings), WINDOW_UPDATE on stream 0.
PREFACE_WRITE = bytes.fromhex(
    "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a"
    "000024040000000000000200000000000300000000000400400000000500400000000600004000fe0300000001"
    "000004080000000000003f0001"
)
# The 131094-byte write's head: HEADERS of stream 1 (:path, :authority, content-type, te,
# grpc-accept-encoding, user-agent, x-i: big0.3, each inserted into the HPACK table), its
# WINDOW_UPDATE, the header of its DATA frame (100006 bytes, END_STREAM), the gRPC message prefix.
HEAD_FRAMES = bytes.fromhex(
    "0000e201040000000140053a70617468192f6163632e746573742e76312e53686f702f4765744974656d400a3a61"
    "7574686f726974790f3132372e302e302e313a32313130328386400c636f6e74656e742d74797065106170706c69"
    "636174696f6e2f677270634002746508747261696c6572734014677270632d6163636570742d656e636f64696e67"
    "176964656e746974792c206465666c6174652c20677a6970400a757365722d6167656e7430677270632d70797468"
    "6f6e2f312e38352e3320677270632d632f35382e302e3020286c696e75783b20636874747032290003782d690662"
    "6967302e33000004080000000001000000050186a600010000000100000186a16244"
)
HEAD = HEAD_FRAMES + b"D" * (4096 - len(HEAD_FRAMES))
SIZE = 131094
# What the kernel sent in place of the tail: h2_block (start 248: stream 1's DATA, from 0,
# complete, 5 frames), then stream 1's DATA header, stream 3's HEADERS with its 20-byte block
# (all but x-i indexed from the table stream 1 filled), its WINDOW_UPDATE, its DATA header
# (30767 bytes) and a WINDOW_UPDATE on stream 0 that ends the write.
BLOCK = bytes.fromhex(
    "f8000000000000000100000005000000"
    "0186a6000100000001"
    "000014010400000003c3c28386c1c0bfbe0003782d6906626967302e30"
    "00000408000000000300000005"
    "00782f000000000003"
    "0000040800000000000000000a"
)  # fmt: skip


def shape(frames: list[Frame]) -> list[tuple[int, int, int, int, int, bool]]:
    return [(f.type, f.flags, f.stream_id, f.length, len(f.payload), f.complete) for f in frames]


def test_a_block_gives_every_frame_of_the_write_and_keeps_sync() -> None:
    r = FrameReader()
    frames, lost = r.feed_block(HEAD, SIZE, BLOCK)
    assert lost == 0
    assert shape(frames) == [
        (HEADERS, 4, 1, 226, 226, True),
        (WINDOW_UPDATE, 0, 1, 4, 4, True),
        (DATA, 1, 1, 100006, 4096 - 257, False),  # what the head holds of it
        (HEADERS, 4, 3, 20, 20, True),  # from the block: in the middle of the write
        (WINDOW_UPDATE, 0, 3, 4, 4, True),
        (DATA, 0, 3, 30767, 0, False),
        (WINDOW_UPDATE, 0, 0, 4, 4, True),
    ]
    assert frames[3].payload == bytes.fromhex("c3c28386c1c0bfbe0003782d6906626967302e30")
    assert (r.in_sync, r._skip, bytes(r._buf)) == (True, 0, b"")
    # the next write starts with a frame, as the kernel said (h2_block.from of the next call: 0)
    frames, lost = r.feed(bytes.fromhex("0000040800000000050000000a"), 13)
    assert (shape(frames), lost) == ([(WINDOW_UPDATE, 0, 5, 4, 4, True)], 0)


def test_the_parser_names_the_stream_whose_headers_were_mid_write() -> None:
    """Stream 3's header block refers to the HPACK entries stream 1's inserted: decoded whole,
    the call has its :path and metadata (with the tail alone, stream 3 was lost and the table
    went out of step for every later call of the channel)."""
    p = Http2Parser()
    p.feed(Segment(Direction.EGRESS, PREFACE_WRITE, len(PREFACE_WRITE), 1))
    p.feed(Segment(Direction.EGRESS, HEAD, SIZE, 2, frames=BLOCK))
    streams = p._streams
    assert sorted(streams) == [1, 3]
    for sid, tag in ((1, "big0.3"), (3, "big0.0")):
        headers = dict(streams[sid].request)
        assert not streams[sid].incomplete, sid
        assert headers[":path"] == "/acc.test.v1.Shop/GetItem", sid
        assert headers["x-i"] == tag
    assert p.stats.extra.get("sync_lost", 0) == 0 and p.stats.extra.get("hpack_unknown_table", 0) == 0


def block(start: int, first: int, frames: list[bytes], complete: int = 1) -> bytes:
    return struct.pack("<IIII", start, first, complete, len(frames)) + b"".join(frames)


def hdr(length: int, ftype: int, flags: int, sid: int) -> bytes:
    return length.to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big")


# A server's 112775-byte read (grpcio reads up to 8 KB at first, more later): it starts 61191 bytes
# before the end of a DATA frame the reader is inside of, and ends inside the next one.
READ_SIZE = 112775
READ_BLOCK = block(61191, 61191, [hdr(69033, DATA, 1, 7)])


@pytest.mark.parametrize(
    ("skip", "in_sync", "want_frames", "want_lost", "want_skip"),
    [
        # the reader agrees: the frame that starts at 61191 is reported, the rest of it skipped next
        (61191, True, [(DATA, 1, 7, 69033, 0, False)], 0, 61191 + 9 + 69033 - READ_SIZE),
        # it does not (it missed bytes the kernel saw): it takes up again where the kernel says
        (100, True, [(DATA, 1, 7, 69033, 0, False)], LOST_BEFORE, 61191 + 9 + 69033 - READ_SIZE),
        # out of sync, the kernel's frame start is where it takes up again
        (0, False, [(DATA, 1, 7, 69033, 0, False)], LOST_BEFORE, 61191 + 9 + 69033 - READ_SIZE),
    ],
)
def test_a_read_inside_a_frame(skip: int, in_sync: bool, want_frames: list[tuple[int, ...]], want_lost: int,
                               want_skip: int) -> None:
    r = FrameReader()
    r._skip = skip
    r.in_sync = in_sync
    frames, lost = r.feed_block(b"A" * 4096, READ_SIZE, READ_BLOCK)
    assert (shape(frames), lost, r._skip) == (want_frames, want_lost, want_skip)


def test_a_header_block_cut_by_the_calls_end_is_finished_by_the_next_call() -> None:
    """HEADERS + CONTINUATION where the CONTINUATION goes on in the next call: the block holds
    what this call moved of it, the next call's head the rest."""
    cont = b"x" * 30
    write = hdr(5000, DATA, 0, 1) + b"d" * 5000 + hdr(3, HEADERS, 0, 3) + b"abc" + hdr(30, CONTINUATION, 4, 3)
    size = len(write) + 10  # 10 bytes of the CONTINUATION's payload in this call
    blk = block(0, 0, [hdr(5000, DATA, 0, 1), hdr(3, HEADERS, 0, 3) + b"abc", hdr(30, CONTINUATION, 4, 3) + cont[:10]])
    r = FrameReader()
    frames, lost = r.feed_block(write[:4096], size, blk)
    assert lost == 0
    assert shape(frames) == [(DATA, 0, 1, 5000, 4087, False), (HEADERS, 0, 3, 3, 3, True)]
    frames, lost = r.feed(cont[10:], 20)
    assert (shape(frames), lost) == ([(CONTINUATION, 4, 3, 30, 30, True)], 0)
    assert frames[0].payload == cont


def test_an_incomplete_block_loses_sync_after_its_frames() -> None:
    """The kernel could not follow the call to its end (block full, step limit, fault; counted
    there as h2_unwalked): its frames are used, then the reader waits for a frame start."""
    r = FrameReader()
    blk = block(0, 0, [hdr(9000, DATA, 0, 1)], complete=0)
    frames, lost = r.feed_block(hdr(9000, DATA, 0, 1) + b"d" * 4087, 20000, blk)
    assert (shape(frames), lost, r.in_sync) == ([(DATA, 0, 1, 9000, 4087, False)], LOST_AFTER, False)


def test_the_preface_taken_off_shifts_the_blocks_offsets() -> None:
    """A big first write (preface + frames): the parser strips the preface, the block's offsets
    count it (http2.Http2Parser.feed passes the shift)."""
    frames_bytes = hdr(0, 4, 0, 0) + hdr(5000, DATA, 1, 1)
    write = PREFACE_WRITE[:24] + frames_bytes
    size = len(write) + 5000
    blk = block(24 + 9, 24, [hdr(5000, DATA, 1, 1)])
    r = FrameReader()
    frames, lost = r.feed_block(frames_bytes, size - 24, blk, shift=24)
    assert (shape(frames), lost, r._skip) == ([(4, 0, 0, 0, 0, True), (DATA, 1, 1, 5000, 0, False)], 0, 0)


# nginx 1.22 as a gRPC proxy (grpc_pass), its client side: a writev of a 4096-byte DATA frame of
# stream 11 (9 + 4096 bytes: a few bytes over the kernel's 4096-byte head), then the stream's last
# DATA frame and its trailers (grpc-status 0). For the first, the kernel sent the head and a
# 25-byte frame block (h2_block: start 0, from 0, complete, 1 frame; the DATA frame's header):
# the record is longer than the call.
NGINX_DATA_HEAD = bytes.fromhex("00100000000000000b") + b"2" * 4087
NGINX_DATA_BLOCK = bytes.fromhex("00000000000000000100000001000000" "00100000000000000b")
NGINX_LAST_DATA = bytes.fromhex("00005400000000000b") + b"2" * 73 + bytes.fromhex("00000000066563686f3a33")
NGINX_TRAILERS = bytes.fromhex("00001801050000000b00889acac8b21234da8f013000899acac8b5254207317f00")


def nginx_record(payload: bytes, size: int, tail_len: int) -> bytes:
    h = ev.EventHdr(kind=int(EventKind.DATA), pid=28452, tid=28452, fd=8, size=size, tail_len=tail_len,
                    captured_len=len(payload), comm=b"nginx")  # fmt: skip
    return bytes(h) + payload


def test_a_call_a_few_bytes_over_the_head_keeps_its_block_apart() -> None:
    raw = nginx_record(NGINX_DATA_HEAD + NGINX_DATA_BLOCK, 4105, TAIL_IS_FRAMES | len(NGINX_DATA_BLOCK))
    e = ev.decode(raw, len(raw))
    assert (e.size, e.data, e.tail, e.frames) == (4105, NGINX_DATA_HEAD, b"", NGINX_DATA_BLOCK)
    r = FrameReader()
    frames, lost = r.feed_block(e.data, e.size, e.frames)
    assert (shape(frames), lost) == ([(DATA, 0, 11, 4096, 4087, False)], 0)
    # the next writes are read in step: the stream's end and its trailers
    assert r.feed(NGINX_LAST_DATA, len(NGINX_LAST_DATA)) == ([Frame(DATA, 0, 11, 84, NGINX_LAST_DATA[9:])], 0)
    frames, lost = r.feed(NGINX_TRAILERS, len(NGINX_TRAILERS))
    assert (shape(frames), lost) == ([(HEADERS, 5, 11, 24, 24, True)], 0)
