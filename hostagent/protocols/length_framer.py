"""Cut one direction of a byte stream into length-prefixed frames (PostgreSQL, MySQL).

The kernel copies a bounded prefix of each syscall (``Segment.size`` > ``len(data)``): the
missing tail is a hole whose length is known but whose bytes are not. A frame whose header was
read before the hole is still delivered (its captured prefix, ``truncated=True``) and the hole
bytes count towards skipping the rest of it. When the hole hides a frame boundary (it ends
after the frame, or cuts a header) the framer cannot know where the next frame starts: it
drops what it has and waits for the next segment, taking its first byte as a frame start
(writes are almost always frame-aligned); the parser's ``accept_resync`` check rejects segments
that do not start like a frame. Frames longer than ``keep`` deliver their first ``keep`` bytes
and skip the rest, so memory per direction stays below ``keep`` + one segment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

# frame_len(buf) -> total frame length (header included) when the header is complete,
# None when more bytes are needed, -1 when the bytes cannot start a frame.
FrameLen = Callable[[bytes], Optional[int]]


class Frame:
    __slots__ = ("data", "end_ns", "start_ns", "total", "truncated")

    def __init__(self, data: bytes, total: int, truncated: bool, start_ns: int, end_ns: int) -> None:
        self.data = data  # the frame's captured prefix (all of it unless truncated)
        self.total = total  # the frame's real length on the wire
        self.truncated = truncated
        self.start_ns = start_ns  # segment that carried the first byte
        self.end_ns = end_ns  # segment that carried the last byte (or the hole's segment)


class LengthFramer:
    """Pull-model framer: ``push`` a segment, then call ``next`` until it returns None.

    The buffer is an immutable ``bytes`` plus a read offset: a fully captured segment that
    starts on a frame boundary (the usual case) is framed in place, without a copy.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.buf = b""
        self.off = 0  # read position in buf
        self.buf_ts = 0  # segment ts of buf[off]
        self.ts = 0  # ts of the newest segment
        self.skip = 0  # bytes still to drop: the uncaptured rest of a frame already delivered
        self.hole = 0  # uncaptured bytes right after buf (the newest segment's tail)
        self.lost = False  # sync lost: the next segment must start a frame
        self.resyncs = 0
        self.truncated = 0

    @property
    def buffered(self) -> int:
        return len(self.buf) - self.off

    def push(self, data: bytes, size: int, ts_ns: int) -> bool:
        """Add a segment. Returns True when this segment starts after a loss of sync."""
        self.ts = ts_ns
        hole = max(0, size - len(data))
        resync = self.lost
        if self.lost:
            self.lost = False
            self.buf, self.off = b"", 0
            self.skip = 0
        if self.skip:
            take = min(self.skip, len(data))
            data = data[take:]
            self.skip -= take
            if self.skip:  # all captured bytes belonged to the skipped frame; the hole too
                if hole > self.skip:  # ...and more: the next frame started inside the hole
                    self._lose()
                else:
                    self.skip -= hole
                return resync
        if self.off >= len(self.buf):
            self.buf, self.off = data, 0
            self.buf_ts = ts_ns
        else:
            self.buf, self.off = self.buf[self.off :] + data, 0
        self.hole = hole
        return resync

    def _lose(self) -> None:
        self.buf, self.off = b"", 0
        self.skip = 0
        self.hole = 0
        self.lost = True
        self.resyncs += 1

    def restart(self) -> None:
        """Forget the frame in progress: the next segment starts a frame (nothing counted; the
        caller knows why)."""
        self.buf, self.off = b"", 0
        self.skip = 0
        self.hole = 0
        self.lost = False

    def drop(self) -> None:
        """The parser rejected what is buffered: forget it until the next segment."""
        self._lose()

    def next(self, frame_len: FrameLen) -> Optional[Frame]:
        buf, off = self.buf, self.off
        avail = len(buf) - off
        if not avail and not self.hole:
            return None
        total = frame_len(buf[off : off + 16]) if avail else None
        if total is not None and total < 0:
            self._lose()
            return None
        if total is not None and total <= avail:
            end = off + total
            frame = Frame(buf[off : min(end, off + self.keep)], total, False, self.buf_ts, self.ts)
            self.off = end
            self.buf_ts = self.ts  # a frame completes in the newest segment: the rest is from it
            return frame
        if total is not None and (avail >= self.keep or self.hole):
            return self._cut(total)
        if self.hole:  # the hole cuts a header or follows a frame boundary: next start unknown
            self._lose()
        return None

    def _cut(self, total: int) -> Frame:
        """Deliver the buffered prefix of a frame that does not fit; skip its uncaptured rest."""
        buf, off = self.buf, self.off
        avail = len(buf) - off
        frame = Frame(buf[off : off + self.keep], total, True, self.buf_ts, self.ts)
        self.truncated += 1
        remaining = total - avail  # > 0: the frame is not all buffered
        self.buf, self.off = b"", 0
        hole, self.hole = self.hole, 0
        if hole > remaining:  # the frame ended inside the hole: the next start is unknown
            self.lost = True
            self.resyncs += 1
        else:
            self.skip = remaining - hole
        return frame
