"""HTTP/2 framing (RFC 9113 section 4): frame headers and per-direction reassembly.

https://www.rfc-editor.org/rfc/rfc9113#section-4.1

    +-----------------------------------------------+
    |                 Length (24)                   |
    +---------------+---------------+---------------+
    |   Type (8)    |   Flags (8)   |
    +-+-------------+---------------+-------------------------------+
    |R|                 Stream Identifier (31)                      |
    +=+=============================================================+
    |                   Frame Payload (0...)                      ...

``FrameReader`` turns one direction's Segments into frames. Frames split across Segments are joined;
many frames in one Segment come out one by one. When a Segment's tail was not captured
(``size > len(data)``) the reader still knows where the current frame ends from its header, so it
hands the frame on marked incomplete (DATA lengths still count) and skips the rest honestly. Only
when the lost bytes run past a frame boundary does it lose sync; it then waits for a Segment that
starts with a plausible frame header. ``feed`` says where the loss was (``LOST_BEFORE`` the frames
it returns, ``LOST_AFTER`` them, or both): frames before a loss decode with the state as it was.

A Segment bigger than the kernel's head copy may carry its last bytes too (``tail``, the last
``len(tail)`` of ``size``). After the head's last whole frame, the frame the cut went through has a
known length: when the next frame starts inside the tail, the reader goes on from there, frame by
frame, with nothing lost. When it starts in the gap (several 16 KB DATA frames of a 100 KB gRPC
reply), the frames at the end of the tail are found by a strict check (``frames_ending_at``: a
chain of plausible headers, each on stream 0 or an open stream, ending exactly at the Segment's
end, accepted only when no other chain is possible); the first of them is marked ``after_gap``:
frames went by unseen before it, but a header block (HPACK) was not among them. (The senders this
is for put HEADERS before a message's DATA and the trailers after it, in the tail.) DATA payload
in the gap is never guessed at.

On a connection whose preface the kernel saw, a big Segment comes with a frame block instead of a
tail (``feed_block``): the kernel followed the frames from the head's cut to the Segment's end and
copied every frame header and every payload but DATA's. Nothing is guessed then: header blocks in
the middle of a multi-stream write are decoded, and the reader stays in sync.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER_LEN = 9
DEFAULT_MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE initial value
ABSOLUTE_MAX_FRAME = (1 << 24) - 1

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9

FLAG_END_STREAM = 0x1  # DATA, HEADERS
FLAG_ACK = 0x1  # SETTINGS, PING
FLAG_END_HEADERS = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
FLAG_PADDED = 0x8  # DATA, HEADERS, PUSH_PROMISE
FLAG_PRIORITY = 0x20  # HEADERS

# Flags each known type defines: anything else set makes a header implausible for looks_like.
_DEFINED_FLAGS = {
    DATA: FLAG_END_STREAM | FLAG_PADDED,
    HEADERS: FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
    PRIORITY: 0,
    RST_STREAM: 0,
    SETTINGS: FLAG_ACK,
    PUSH_PROMISE: FLAG_END_HEADERS | FLAG_PADDED,
    PING: FLAG_ACK,
    GOAWAY: 0,
    WINDOW_UPDATE: 0,
    CONTINUATION: FLAG_END_HEADERS,
}
_STREAM_ZERO = frozenset({SETTINGS, PING, GOAWAY})  # connection-level frames only
_BLOCK_TYPES = frozenset({HEADERS, CONTINUATION, PUSH_PROMISE})  # they change the HPACK table
_FIXED_LENGTH = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}

# FrameReader.feed's loss, as bits: unknown bytes went by before the frames it returns (it was out
# of sync and regained it at this Segment), or after them (this Segment's uncaptured tail ran past
# a frame boundary).
LOST_BEFORE = 1
LOST_AFTER = 2

# bpf/events.h struct h2_block: start, from, complete, frames (u32 each, little endian)
_BLOCK_HEAD = struct.Struct("<IIII")

# RFC 9113 section 7: error codes, by name, for RST_STREAM and GOAWAY.
ERROR_CODES = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)  # fmt: skip


def error_code_name(code: int) -> str:
    return ERROR_CODES[code] if 0 <= code < len(ERROR_CODES) else f"0x{code:x}"


def parse_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int, int]:
    """(length, type, flags, stream id) of the 9-byte frame header at ``offset``."""
    length = (buf[offset] << 16) | (buf[offset + 1] << 8) | buf[offset + 2]
    sid = int.from_bytes(buf[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
    return length, buf[offset + 3], buf[offset + 4], sid


def plausible_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> bool:
    """Strict check that 9 bytes at ``offset`` are a frame header a real peer would send.

    Known type only, only that type's defined flags, reserved bit clear, length within the default
    SETTINGS_MAX_FRAME_SIZE (16384) and the type's fixed length, and the stream-id rule of the type
    (SETTINGS/PING/GOAWAY on stream 0; DATA/HEADERS/PRIORITY/RST_STREAM/PUSH_PROMISE/CONTINUATION
    never on stream 0). Used to accept a connection first seen mid-way and to regain sync.
    """
    if len(buf) - offset < HEADER_LEN:
        return False
    length, ftype, flags, sid = parse_header(buf, offset)
    if ftype not in _DEFINED_FLAGS or flags & ~_DEFINED_FLAGS[ftype] or buf[offset + 5] & 0x80:
        return False
    if length > DEFAULT_MAX_FRAME:
        return False
    fixed = _FIXED_LENGTH.get(ftype)
    if fixed is not None and length != fixed:
        return False
    if ftype == SETTINGS and (length % 6 or (flags & FLAG_ACK and length)):
        return False
    if ftype == GOAWAY and length < 8:
        return False
    if ftype in _STREAM_ZERO:
        return sid == 0
    return ftype == WINDOW_UPDATE or sid != 0


def frames_ending_at(buf: bytes, streams: Container[int]) -> int:
    """Where, in ``buf`` (the last bytes of a write whose start is unknown), the whole frames that end
    exactly at its end begin; -1 when none can be told apart with certainty.

    A start is a ``plausible_header`` on stream 0 or one of ``streams`` (open streams) whose frame
    ends exactly at the end or where another start is. Every start must lie on the chain of the
    earliest one (else payload bytes look like headers too, and two chains are possible). A
    header block (HEADERS, CONTINUATION, PUSH_PROMISE) on another stream counts as a start too,
    and fails the chain it begins: taking the frames after it would let it go by unseen, and the
    HPACK table with it. Frame headers only, never a payload, are read here.
    """
    end = len(buf)
    chained = bytearray(end + 1)  # chained[p]: a chain of frames from p ends exactly at the end
    chained[end] = 1
    nxt: dict[int, int] = {}
    for p in range(end - HEADER_LEN, -1, -1):
        if buf[p] or buf[p + 1] > 0x40:  # length > 16384: never plausible (cheap first test)
            continue
        stop = p + HEADER_LEN + ((buf[p + 1] << 8) | buf[p + 2])
        if stop > end or not chained[stop] or not plausible_header(buf, p):
            continue
        sid = int.from_bytes(buf[p + 5 : p + 9], "big")
        if sid and sid not in streams and buf[p + 3] not in _BLOCK_TYPES:
            continue  # zero bytes read as an empty DATA frame are common; a header block is not
        chained[p] = 1
        nxt[p] = stop
    if not nxt:
        return -1
    first = min(nxt)
    on_chain = 0
    p = first
    while p != end:
        sid = int.from_bytes(buf[p + 5 : p + 9], "big")
        if sid and sid not in streams:
            return -1
        on_chain += 1
        p = nxt[p]
    return first if on_chain == len(nxt) else -1


@dataclass(slots=True)
class Frame:
    """One frame. ``payload`` is what was captured; ``complete`` is False when bytes were lost."""

    type: int
    flags: int
    stream_id: int
    length: int  # payload length from the header: what really moved
    payload: bytes
    complete: bool = True
    after_gap: bool = False  # frames of unknown type went by just before (found in a tail)


class FrameReader:
    """Reassembles one direction's byte stream into frames (see module docstring)."""

    __slots__ = ("_buf", "_skip", "in_sync", "max_frame", "resyncs")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # bytes of an already-reported incomplete frame still to discard
        self.in_sync = True
        self.max_frame = ABSOLUTE_MAX_FRAME  # an observer cannot know every SETTINGS it missed
        self.resyncs = 0

    def feed(self, data: bytes, size: int, tail: bytes = b"",
             streams: Container[int] = ()) -> tuple[list[Frame], int]:
        """Frames completed by this Segment, and where sync was lost (``LOST_BEFORE`` /
        ``LOST_AFTER`` bits; 0: nowhere): bytes of unknown meaning went by, so frames - possibly
        HEADERS - were missed. ``tail``: the Segment's last bytes, when captured apart from
        ``data`` (see the module docstring); ``streams``: the open streams (a tail's frames must
        be on one of them, or on stream 0)."""
        lost = 0
        if tail:
            tail_at = size - len(tail)
            if tail_at <= len(data):  # no gap: the tail goes on where the head stopped
                data += tail[len(data) - tail_at :]
                tail = b""
        got = len(data)
        missing = max(size - got, 0)
        if not self.in_sync:
            if not plausible_header(data):
                self.resyncs += 1
                if tail:  # sync may be regained at frames that end this Segment
                    regained, _ = self._past_cut([], -1, tail, size, streams, 0)
                    if regained:
                        regained[0].after_gap = False  # LOST_BEFORE says more: the table is lost
                    return regained, LOST_BEFORE
                return [], LOST_BEFORE
            self.in_sync = True
            self._buf.clear()
            self._skip = 0
            lost = LOST_BEFORE  # whatever came between the loss and here is unknown
        if self._skip:
            n = min(self._skip, got)
            self._skip -= n
            data = data[n:]
            if self._skip:  # the frame being skipped goes on past the head
                nxt, self._skip = got + self._skip, 0
                if nxt >= size:
                    self._skip = nxt - size
                    return [], lost
                return self._past_cut([], nxt, tail, size, streams, lost)
        frames: list[Frame] = []
        buf = self._buf
        buf += data
        if not self._whole_frames(frames):
            return frames, lost | LOST_AFTER
        if missing:
            if len(buf) < HEADER_LEN:
                self._buf.clear()
                return self._past_cut(frames, -1, tail, size, streams, lost)
            length, ftype, flags, sid = parse_header(buf, 0)
            need = HEADER_LEN + length - len(buf)
            frames.append(Frame(ftype, flags, sid, length, bytes(buf[HEADER_LEN:]), complete=False))
            buf.clear()
            if missing > need:
                return self._past_cut(frames, got + need, tail, size, streams, lost)
            self._skip = need - missing
        return frames, lost

    def feed_block(self, data: bytes, size: int, block: bytes, shift: int = 0) -> tuple[list[Frame], int]:
        """``feed`` for a Segment whose frames from the head's cut on the kernel followed (module
        docstring; bpf/events.h struct h2_block). ``shift``: bytes taken off the Segment's start
        (the preface) since the kernel numbered its offsets. A block that does not agree with what
        the reader knows (the kernel's first frame is not where the reader's is) wins over it: the
        reader takes up again at the kernel's first frame (``LOST_BEFORE``)."""
        if len(block) < _BLOCK_HEAD.size:
            return self.feed(data, size)
        start, first, complete, count = _BLOCK_HEAD.unpack_from(block)
        start -= shift
        first -= shift
        if not 0 <= first <= start <= size:
            return self.feed(data, size)
        lost = 0
        if not self.in_sync or (not self._buf and self._skip != first):
            # Out of sync, or the two disagree on where this Segment's first frame starts (the
            # kernel saw every byte; the reader may have missed some): take up again where the
            # kernel says, what went before unknown.
            self._lose()
            self.in_sync = True
            lost = LOST_BEFORE
            data, size, start = data[first:], size - first, start - first
        frames, head_lost = self.feed(data[:start], start)
        if head_lost or self._buf or self._skip or not self.in_sync:
            self._lose()  # the head's frames do not end where the kernel's start: sync is lost
            return frames, lost | head_lost | LOST_AFTER
        pos = start
        at = _BLOCK_HEAD.size
        for _ in range(count):
            if at + HEADER_LEN > len(block):
                break
            length, ftype, flags, sid = parse_header(block, at)
            at += HEADER_LEN
            stop = pos + HEADER_LEN + length
            if ftype == DATA:  # not copied: what the head holds of it, if anything
                payload = data[pos + HEADER_LEN : stop] if pos + HEADER_LEN < len(data) else b""
            else:
                n = min(length, size - pos - HEADER_LEN)
                payload = block[at : at + n]
                at += n
            if stop > size:  # it goes on in the next Segment
                if ftype == DATA:
                    frames.append(Frame(ftype, flags, sid, length, payload, complete=False))
                    self._skip = stop - size
                else:
                    self._buf += block[at - len(payload) - HEADER_LEN : at]
                pos = size
                break
            frames.append(Frame(ftype, flags, sid, length, payload, complete=len(payload) == length))
            pos = stop
        if not complete or pos < size:
            self._lose()
            lost |= LOST_AFTER
        return frames, lost

    def _whole_frames(self, frames: list[Frame]) -> bool:
        """Appends the whole frames at the start of the buffer and keeps what follows them; False
        (sync lost) on a length no peer may send."""
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_LEN:
            length, ftype, flags, sid = parse_header(buf, pos)
            if length > self.max_frame:
                self._lose()
                return False
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            frames.append(Frame(ftype, flags, sid, length, bytes(buf[pos + HEADER_LEN : stop])))
            pos = stop
        del buf[:pos]
        return True

    def _past_cut(self, frames: list[Frame], nxt: int, tail: bytes, size: int, streams: Container[int],
                  lost: int) -> tuple[list[Frame], int]:
        """The Segment's uncaptured bytes run past a frame boundary: at offset ``nxt`` of the
        Segment a frame starts (-1: where is unknown). From the tail, if it holds that offset or
        an unambiguous chain of frames ending the Segment; else sync is lost. The buffer is empty."""
        tail_at = size - len(tail)
        if tail and nxt >= tail_at:
            self._buf += tail[nxt - tail_at :]
            self.in_sync = True
            if not self._whole_frames(frames):
                return frames, lost | LOST_AFTER
            return frames, lost
        if tail:
            opened = {f.stream_id for f in frames if f.type == HEADERS}  # this Segment's new streams
            start = frames_ending_at(tail, _Either(streams, opened))
            if start >= 0:  # nxt (if known) is in the gap, before the tail: before start
                self.in_sync = True
                found: list[Frame] = []
                self._buf += tail[start:]
                if self._whole_frames(found) and found:
                    found[0].after_gap = True
                    return frames + found, lost
        self._lose()
        return frames, lost | LOST_AFTER

    def lose(self) -> None:
        """Bytes of this direction went by unseen: drop what is buffered and take up again at the
        next Segment that starts like a frame header."""
        self._lose()

    def _lose(self) -> None:
        self._buf.clear()
        self._skip = 0
        self.in_sync = False


class _Either:
    """Membership in either of two containers (open streams, and those this Segment opened)."""

    __slots__ = ("a", "b")

    def __init__(self, a: Container[int], b: Container[int]) -> None:
        self.a = a
        self.b = b

    def __contains__(self, x: object) -> bool:
        return x in self.a or x in self.b
