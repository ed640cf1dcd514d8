"""An incremental RESP2/RESP3 reader (https://redis.io/docs/latest/develop/reference/protocol-spec/).

It turns one direction of a Redis connection into top-level values without ever holding a
value's content: bulk strings are counted and skipped, and only what the parser needs is copied
(at most ``CAPTURE`` bytes of each of the first three elements of a top-level aggregate, and of a
top-level simple/blob error). All RESP3 types are framed: maps and attributes (two values per
entry; an attribute does not count as an element of its parent, and a top-level attribute is
dropped because the real reply follows it), sets, pushes, doubles, booleans, nulls, big numbers,
verbatim strings, blob errors, and streamed strings/aggregates (``$?``, ``*?``, ``;n``, ``.``).
Inline commands (a bare text line) are read on the request side only.

Uncaptured bytes (``size`` > ``len(data)``): inside a bulk string they just count towards it.
Anywhere else they hide framing: the reader reports ``BROKEN`` and resynchronises at the next
segment that starts like a value (writes are value-aligned in practice). Bytes lost with no
one saying so leave the reader inside a bulk string for good; only the other direction can tell
(redis.RedisParser._lost_in_bulk), which then ``restart``s it.
"""

from __future__ import annotations

from typing import Optional, Union

CAPTURE = 64  # bytes kept of a captured element
MAX_LINE = 512  # bytes kept of a line (the rest of a long line is scanned, not kept)
MAX_DEPTH = 64
MAX_BULK = 512 * 1024 * 1024  # Redis' own proto-max-bulk-len default
MAX_COUNT = 1 << 32

Scalar = Union[bytes, int, None]
SCALAR_TYPES = frozenset(b"+-:,#_(")
BULK_TYPES = frozenset(b"$!=")
AGGREGATE_TYPES = frozenset(b"*~>%|")
REPLY_START = SCALAR_TYPES | BULK_TYPES | AGGREGATE_TYPES
INLINE = 0  # Value.kind of an inline command


class Value:
    """One complete top-level value."""

    __slots__ = ("count", "end_ns", "error", "kind", "size", "start_ns", "text", "truncated", "words")

    def __init__(self, kind: int, start_ns: int) -> None:
        self.kind = kind  # the type byte (b"*"[0]...), or INLINE
        self.start_ns = start_ns
        self.end_ns = start_ns
        self.count = 0  # elements of an aggregate / arguments+1 of an inline command
        self.words: list[Scalar] = []  # first (up to 3) elements, captured prefixes
        self.text: Optional[bytes] = None  # a top-level scalar's captured content
        self.error: Optional[bytes] = None  # an aggregate's first element that is an error (EXEC's results)
        self.size = 0  # bytes on the wire
        self.truncated = False


class Broken:
    """Framing was lost at ``ts_ns``; ``in_flight`` tells whether a value had started."""

    __slots__ = ("in_flight", "ts_ns")

    def __init__(self, ts_ns: int, in_flight: bool) -> None:
        self.ts_ns = ts_ns
        self.in_flight = in_flight


class _Frame:
    __slots__ = ("attr", "remaining", "stream_str")

    def __init__(self, remaining: int, attr: bool = False, stream_str: bool = False) -> None:
        self.remaining = remaining  # -1: streamed, ends with '.' (or ';0' for strings)
        self.attr = attr
        self.stream_str = stream_str


class _BrokenError(Exception):
    pass


class RespReader:
    """Feed one direction's segments; get complete top-level values (and ``Broken`` markers)."""

    def __init__(self, requests: bool) -> None:
        self.requests = requests  # the client's side: inline commands allowed
        self.resyncs = 0
        self._reset()
        self._lost = False

    def _reset(self) -> None:
        self._line = bytearray()
        self._line_len = 0
        self._line_ts = 0
        self._bulk = 0  # bytes (CRLF included) left in the current bulk string / chunk
        self._bulk_cap: Optional[bytearray] = None
        self._chunk = False  # the bulk is a chunk of a streamed string, not a value
        self._stack: list[_Frame] = []
        self._top: Optional[Value] = None

    def feed(self, data: bytes, size: int, ts_ns: int) -> list[Union[Value, Broken]]:
        out: list[Union[Value, Broken]] = []
        missing = max(0, size - len(data))
        if self._lost:
            if not self._starts_value(data):
                return out  # still lost; this segment's bytes cannot be placed
            self._lost = False
        try:
            self._scan(data, ts_ns, out)
            if missing:
                self._hole(missing, ts_ns, out)
        except _BrokenError:
            out.append(Broken(ts_ns, self._top is not None or bool(self._line)))
            self.resyncs += 1
            self._reset()
            self._lost = True
        return out

    @property
    def in_bulk(self) -> bool:
        """Inside a bulk string: the next bytes are counted towards it, whatever they look like."""
        return self._bulk > 0

    @property
    def idle(self) -> bool:
        """Between values: nothing begun, nothing being skipped."""
        return not (self._bulk or self._line_len or self._stack or self._lost) and self._top is None

    def restart(self) -> None:
        """Forget the value in progress: the next bytes start a new one."""
        self._reset()
        self._lost = False

    def _starts_value(self, data: bytes) -> bool:
        if not data:
            return False
        if self.requests:
            return data[:1] == b"*" or data[:1].isalpha()
        return data[0] in REPLY_START

    def _hole(self, missing: int, ts_ns: int, out: list[Union[Value, Broken]]) -> None:
        if self._bulk and missing <= self._bulk:
            if self._top is not None:
                self._top.size += missing
                self._top.truncated = True
            self._bulk -= missing
            if self._bulk == 0:
                self._bulk_done(ts_ns, out)
            return
        raise _BrokenError

    # -- scanning ----------------------------------------------------------------------------------
    def _scan(self, data: bytes, ts_ns: int, out: list[Union[Value, Broken]]) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            if self._bulk:
                take = min(self._bulk, n - pos)
                cap = self._bulk_cap
                if cap is not None and len(cap) < CAPTURE + 2:
                    cap += data[pos : pos + min(take, CAPTURE + 2 - len(cap))]
                pos += take
                self._bulk -= take
                if self._top is not None:
                    self._top.size += take
                if self._bulk == 0:
                    self._bulk_done(ts_ns, out)
                continue
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl
            if not self._line and not self._line_len:
                self._line_ts = ts_ns
            room = MAX_LINE - len(self._line)
            if room > 0:
                self._line += data[pos : pos + min(room, end - pos)]
            self._line_len += end - pos + (0 if nl < 0 else 1)
            if nl < 0:
                return
            pos = nl + 1
            line = bytes(self._line)
            length = self._line_len
            self._line = bytearray()
            self._line_len = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            self._on_line(line, length, ts_ns, out)

    def _on_line(self, line: bytes, length: int, ts_ns: int, out: list[Union[Value, Broken]]) -> None:
        stack = self._stack
        if not stack and self._top is None:
            if not line:
                if self.requests:
                    return  # an empty inline line: the server ignores it too
                raise _BrokenError
            t = line[0]
            if self.requests and t != 0x2A:  # not '*': an inline command
                words = line.split()
                top = Value(INLINE, self._line_ts)
                top.count = len(words)
                top.words = [w[:CAPTURE] for w in words[:3]]
                top.size = length
                top.end_ns = ts_ns
                out.append(top)
                return
            self._top = Value(t, self._line_ts)
        if self._top is not None:
            self._top.size += length
        if not line:
            raise _BrokenError
        t = line[0]
        body = line[1:]
        if t in SCALAR_TYPES:
            content: Scalar = body[:CAPTURE] if t != 0x3A else _int(body)  # ':' integer
            if not stack and t in b"-+":
                content = body[:256]
            elif t == 0x2D and len(stack) == 1 and self._top is not None and self._top.error is None:
                self._top.error = body[:256]
            self._value_done(content, False, ts_ns, out)
        elif t in BULK_TYPES:
            if body == b"?":
                self._push(_Frame(-1, stream_str=True))
                return
            n = _int(body)
            if n == -1:
                self._value_done(None, False, ts_ns, out)
                return
            if not 0 <= n <= MAX_BULK:
                raise _BrokenError
            self._bulk = n + 2
            self._chunk = False
            capture = (len(stack) == 1 and self._top is not None and len(self._top.words) < 3) or (
                not stack and t == 0x21  # '!' blob error at top level
            )
            self._bulk_cap = bytearray() if capture else None
        elif t == 0x3B:  # ';' chunk of a streamed string
            if not stack or not stack[-1].stream_str:
                raise _BrokenError
            n = _int(body)
            if n == 0:
                stack.pop()
                self._value_done(None, False, ts_ns, out)
            elif 0 < n <= MAX_BULK:
                self._bulk = n + 2
                self._chunk = True
                self._bulk_cap = None
            else:
                raise _BrokenError
        elif t in AGGREGATE_TYPES:
            attr = t == 0x7C  # '|'
            if body == b"?":
                self._push(_Frame(-1, attr))
                return
            n = _int(body)
            if n == -1 and t == 0x2A:
                self._value_done(None, False, ts_ns, out)
                return
            if not 0 <= n < MAX_COUNT:
                raise _BrokenError
            if not stack and self._top is not None:
                self._top.count = n
            if n == 0:
                self._value_done(None, attr, ts_ns, out)
                return
            self._push(_Frame(n * 2 if t in b"%|" else n, attr))
        elif t == 0x2E and stack and stack[-1].remaining == -1:  # '.' ends a streamed aggregate
            frame = stack.pop()
            self._value_done(None, frame.attr, ts_ns, out)
        else:
            raise _BrokenError

    def _push(self, frame: _Frame) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise _BrokenError
        self._stack.append(frame)

    def _bulk_done(self, ts_ns: int, out: list[Union[Value, Broken]]) -> None:
        if self._chunk:
            self._chunk = False
            return
        cap = self._bulk_cap
        self._bulk_cap = None
        content: Scalar = bytes(cap[:CAPTURE]).removesuffix(b"\r\n") if cap is not None else b""
        if cap is not None and not self._stack and self._top is not None:
            self._top.text = content if isinstance(content, bytes) else None
        self._value_done(content, False, ts_ns, out)

    def _value_done(self, content: Scalar, attr: bool, ts_ns: int, out: list[Union[Value, Broken]]) -> None:
        """A value ended; fold it into its parent, and emit the top-level value when it ends."""
        stack = self._stack
        while True:
            if not stack:
                top = self._top
                self._top = None
                if top is None or attr:
                    return  # a top-level attribute: the real reply follows
                if top.kind in SCALAR_TYPES:
                    top.text = content if isinstance(content, bytes) else top.text
                    if isinstance(content, int):
                        top.words = [content]
                top.end_ns = ts_ns
                out.append(top)
                return
            parent = stack[-1]
            if len(stack) == 1 and not attr and self._top is not None and len(self._top.words) < 3:
                self._top.words.append(content)
            if attr:
                return  # an attribute is not one of its parent's elements
            if parent.remaining == -1:
                return
            parent.remaining -= 1
            if parent.remaining > 0:
                return
            stack.pop()
            content, attr = None, parent.attr


def whole_replies(data: bytes) -> bool:
    """Whether ``data`` is one or more complete replies and nothing more, as a read taken on value
    boundaries shows them."""
    if not data or data[0] not in REPLY_START:
        return False
    return _whole(data, RespReader(requests=False))


def whole_commands(data: bytes) -> bool:
    """Whether ``data`` is one or more complete commands in RESP arrays and nothing more, as a
    client's write shows them (inline commands, bare text, are too easily found in a value's
    bytes to be believed here)."""
    if not data or data[0] != 0x2A:
        return False
    return _whole(data, RespReader(requests=True))


def _whole(data: bytes, scratch: RespReader) -> bool:
    got = scratch.feed(data, len(data), 0)
    return bool(got) and scratch.idle and not any(isinstance(v, Broken) for v in got)


def _int(body: bytes) -> int:
    try:
        return int(body)
    except ValueError:
        raise _BrokenError from None
