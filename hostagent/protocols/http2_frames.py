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
"""

from __future__ import annotations

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
_FIXED_LENGTH = {PRIORITY: 5, RST_STREAM: 4, PING: 8, WINDOW_UPDATE: 4}

# FrameReader.feed's loss, as bits: unknown bytes went by before the frames it returns (it was out
# of sync and regained it at this Segment), or after them (this Segment's uncaptured tail ran past
# a frame boundary).
LOST_BEFORE = 1
LOST_AFTER = 2

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


@dataclass(slots=True)
class Frame:
    """One frame. ``payload`` is what was captured; ``complete`` is False when bytes were lost."""

    type: int
    flags: int
    stream_id: int
    length: int  # payload length from the header: what really moved
    payload: bytes
    complete: bool = True


class FrameReader:
    """Reassembles one direction's byte stream into frames (see module docstring)."""

    __slots__ = ("_buf", "_skip", "in_sync", "max_frame", "resyncs")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # bytes of an already-reported incomplete frame still to discard
        self.in_sync = True
        self.max_frame = ABSOLUTE_MAX_FRAME  # an observer cannot know every SETTINGS it missed
        self.resyncs = 0

    def feed(self, data: bytes, size: int) -> tuple[list[Frame], int]:
        """Frames completed by this Segment, and where sync was lost (``LOST_BEFORE`` /
        ``LOST_AFTER`` bits; 0: nowhere): bytes of unknown meaning went by, so frames - possibly
        HEADERS - were missed."""
        lost = 0
        missing = max(size - len(data), 0)
        if not self.in_sync:
            if not plausible_header(data):
                self.resyncs += 1
                return [], LOST_BEFORE
            self.in_sync = True
            self._buf.clear()
            self._skip = 0
            lost = LOST_BEFORE  # whatever came between the loss and here is unknown
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            if self._skip:
                n = min(self._skip, missing)
                self._skip -= n
                missing -= n
        frames: list[Frame] = []
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_LEN:
            length, ftype, flags, sid = parse_header(buf, pos)
            if length > self.max_frame:
                self._lose()
                return frames, lost | LOST_AFTER
            stop = pos + HEADER_LEN + length
            if stop > end:
                break
            frames.append(Frame(ftype, flags, sid, length, bytes(buf[pos + HEADER_LEN : stop])))
            pos = stop
        del buf[:pos]
        if missing:
            if len(buf) < HEADER_LEN:
                self._lose()
                return frames, lost | LOST_AFTER
            length, ftype, flags, sid = parse_header(buf, 0)
            need = HEADER_LEN + length - len(buf)
            frames.append(Frame(ftype, flags, sid, length, bytes(buf[HEADER_LEN:]), complete=False))
            buf.clear()
            if missing > need:
                self._lose()
                return frames, lost | LOST_AFTER
            self._skip = need - missing
        return frames, lost

    def lose(self) -> None:
        """Bytes of this direction went by unseen: drop what is buffered and take up again at the
        next Segment that starts like a frame header."""
        self._lose()

    def _lose(self) -> None:
        self._buf.clear()
        self._skip = 0
        self.in_sync = False
