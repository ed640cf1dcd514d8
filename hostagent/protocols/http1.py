"""HTTP/1.0 and HTTP/1.1 (RFC 9112, https://www.rfc-editor.org/rfc/rfc9112): segments -> Calls.

One ``Http1Parser`` per connection sees both directions in order. The direction that carries
request lines is the request side (EGRESS -> this process is the CLIENT, INGRESS -> SERVER);
responses pair with requests first-in first-out, which covers keep-alive and pipelining.

Message framing (RFC 9112 section 6.3), in the order it applies: 1xx interim responses are skipped
(101 ends HTTP/1 on the connection); responses to HEAD and 204/304 have no body; a 2xx answer to
CONNECT opens a tunnel; ``Transfer-Encoding: chunked``; ``Content-Length``; otherwise a request has
no body and a response runs until the connection closes.

The kernel copies only a prefix of each syscall's bytes (``Segment.size`` > ``len(data)``). Bytes
that were not captured are counted, never invented. When they hide framing (a head cut short,
chunk sizes inside the missing tail) the message goes "lossy": its end is taken to be the next
message start seen at the beginning of a segment, a new request on the connection, or the close.
Garbage (or a connection first seen mid-way) puts that direction in "sync" mode: segments are
skipped until one starts like a message. Both are counted in ``stats``.

Hot path: one ``bytes.find`` for the end of a head, then the head parser (``http1_head``: one dict
lookup for a head seen before); bodies are counted, and only a bounded prefix is copied. What a
Call takes from the request head alone (span name, URL and server attributes) is derived once per
distinct head and shared. ``feed_bytes`` is ``feed`` without a Segment to build per event.
"""

from __future__ import annotations

from typing import Final, Optional, Union

from hostagent.model import DIRECTIONS, Attributes, Call, Direction, Role, Segment
from hostagent.protocols.base import ParserStats, ProtocolSpec
from hostagent.protocols.http1_head import REQUEST_STARTS, STARTS, STATUS_START, Message, parse_head, plausible
from hostagent.protocols.http_common import (
    CUT_SHORT_MESSAGE,
    ERROR_CUT_SHORT,
    ERROR_NO_RESPONSE,
    BodyLimit,
    body_limit_of,
    method_attributes,
    parse_host,
    split_target,
    status_error,
)

MAX_HEAD: Final = 16 * 1024  # a head not finished within this many bytes is garbage
MAX_LINE: Final = 1024  # a chunk-size or trailer line longer than this is garbage
MAX_PENDING: Final = 64  # pipelined requests waiting for a response
BODY_LIMIT: Final = 1024  # body prefix kept per message (the traces stage trims further)
HOSTS_MAX: Final = 1024  # Host values remembered (_HOSTS)

# Host header value -> (server.address, server.port), shared by every parser: one address string
# object per Host for every connection and both roles. The stages after it compare values by
# identity before hashing them (Redactor.is_clean, the encoder's memo); a string per parser made
# the client's and the server's spans alternate between two equal objects. Bounded.
_HOSTS: Final[dict[str, tuple[str, int]]] = {}

# Per-direction states. Final literals (as every constant the hot path reads): compiled, a state
# test is an integer comparison, not a lookup in the module's dict.
_HEAD: Final = 0
_LENGTH: Final = 1
_CHUNKED: Final = 2
_UNTIL_CLOSE: Final = 3
_LOSSY: Final = 4
_SYNC: Final = 5
_DONE: Final = 6
# Chunked sub-states.
_CH_SIZE: Final = 0
_CH_DATA: Final = 1
_CH_CRLF: Final = 2
_CH_TRAILER: Final = 3


def looks_like(data: bytes, direction: Direction) -> bool:
    """A request line (known method + space) or an HTTP/1 status line; either direction."""
    return data.startswith(STARTS)


class _Half:
    """Decoder state of one direction."""

    __slots__ = ("buf", "chunk", "head_ts", "is_request", "msg", "remaining", "state")

    def __init__(self, is_request: bool) -> None:
        self.is_request = is_request
        self.state = _HEAD
        self.buf = b""  # partial head or chunk line
        self.head_ts = 0  # ts of the segment where the buffered head began
        self.msg: Optional[Message] = None
        self.remaining = 0  # body bytes (or chunk bytes, or CRLF bytes) still to come
        self.chunk = _CH_SIZE


class Http1Parser:
    """Per-connection HTTP/1.x decoder (a ``StreamParser``)."""

    def __init__(self, body_limit: Union[int, BodyLimit] = BODY_LIMIT) -> None:
        self.stats = ParserStats()
        self.upgraded = False  # 101 or CONNECT tunnel: the bytes are no longer HTTP/1
        self._body_limit = body_limit_of(body_limit)  # read per message part kept: see BodyLimit
        self._req_dir: Optional[Direction] = None
        self._role = Role.UNKNOWN  # of this process, known with _req_dir
        self._req = _Half(True)
        self._resp = _Half(False)
        # requests waiting for their responses, oldest first; a list (at most MAX_PENDING, nearly
        # always one): compiled, its append and pop(0) are C calls, a deque's are method lookups
        self._pending: list[Message] = []
        self._in_sync = True  # before the first message start: counted once as a resync
        # A message start still too short to recognise, per direction: (bytes, first timestamp).
        self._held: dict[int, tuple[bytes, int]] = {}

    # -- public -----------------------------------------------------------------------------
    def feed(self, segment: Segment) -> list[Call]:
        return self.feed_bytes(segment.direction, segment.data, segment.size, segment.ts_ns)

    def feed_bytes(self, direction: int, data: bytes, size: int, ts_ns: int) -> list[Call]:
        """``feed(Segment(direction, data, size, ts_ns))``, minus the Segment (the tracker's path)."""
        if self.upgraded:
            return []
        req_dir = self._req_dir
        if req_dir is None:
            return self._first(direction, data, size, ts_ns)
        out: list[Call] = []
        self._consume(self._req if direction == req_dir else self._resp, data, size, ts_ns, out)
        return out

    def _first(self, direction: int, data: bytes, size: int, ts: int) -> list[Call]:
        """Before any message start: find which side sends requests, then parse from there."""
        held = self._held.pop(direction, None)
        joined = held[0] + data if held is not None else data
        if joined.startswith(STATUS_START):
            self._req_dir = DIRECTIONS[1 - direction]  # the other side asked
        elif joined.startswith(REQUEST_STARTS):
            self._req_dir = DIRECTIONS[direction]
        elif len(joined) < 8 and size == len(data) and any(s.startswith(joined) for s in STARTS):
            # A start split across tiny reads ("G", "ET ..."): hold it, with its first timestamp.
            self._held[direction] = (joined, held[1] if held is not None else ts)
            return []
        else:
            if self._in_sync:
                self._in_sync = False
                self.stats.resyncs += 1
            return []
        self._role = Role.CLIENT if self._req_dir == Direction.EGRESS else Role.SERVER
        if held is None:
            return self.feed_bytes(direction, data, size, ts)
        self._held.clear()
        return self.feed_bytes(direction, held[0], len(held[0]), held[1]) + self.feed_bytes(direction, data, size, ts)

    def close(self, ts_ns: int) -> list[Call]:
        """Finish a response that runs until close (or lost its framing); fail the unanswered."""
        resp = self._resp
        if resp.msg is None and not self._pending:  # idle between messages: the usual close
            self._req.state = resp.state = _DONE
            return []
        out: list[Call] = []
        if resp.msg is not None and resp.state in (_UNTIL_CLOSE, _LOSSY, _LENGTH, _CHUNKED):
            if resp.state in (_LENGTH, _CHUNKED):
                self.stats.truncated += 1
                resp.msg.cut_short = True
            self._response_done(resp, out)
        for req in self._pending:
            out.append(self._call(req, None, ts_ns))
        self.stats.unpaired += len(self._pending)
        self._pending.clear()
        self._req.state = self._resp.state = _DONE
        return out

    def lost(self) -> list[Call]:
        """Calls of this connection were lost in the kernel (shed under load, counted there)
        before the bytes that come next. Requests still waiting may have lost their responses: a
        later response paired with them would give every later span the wrong answer, so they
        are dropped (counted as unpaired; the kernel counted the calls) and both directions wait
        for the next message start. A response being read ends here (its status is known)."""
        out: list[Call] = []
        resp = self._resp
        if resp.msg is not None and resp.state != _DONE:
            self._response_done(resp, out)
        self.stats.unpaired += len(self._pending)
        self._pending.clear()
        self._held.clear()
        for half in (self._req, resp):
            if half.state != _DONE:
                half.state = _SYNC
                half.buf = b""
                half.msg = None
        return out

    def buffered(self) -> int:
        """Bytes held between segments (bounded by MAX_HEAD, MAX_LINE and body prefixes)."""
        n = len(self._req.buf) + len(self._resp.buf)
        return n + sum(len(m.body) for m in self._pending)

    # -- per direction ------------------------------------------------------------------------
    def _consume(self, half: _Half, data: bytes, size: int, ts: int, out: list[Call]) -> None:
        n = len(data)
        if size < n:
            size = n
        state = half.state
        if state == _LOSSY or state == _SYNC:
            if data.startswith(REQUEST_STARTS if half.is_request else STATUS_START):
                if state == _LOSSY:
                    self._finish(half, out)
                half.state = _HEAD
                half.buf = b""
            elif state == _LOSSY:
                msg = half.msg
                if msg is not None:
                    self._keep(msg, data, 0, size)
                    msg.body_size += size
                    msg.end_ns = ts
                return
            else:
                return
        pos = 0
        while pos < size:
            state = half.state
            if state == _HEAD:
                pos = self._head(half, data, n, size, pos, ts, out)
            elif state == _LENGTH:
                msg = half.msg
                assert msg is not None
                remaining = half.remaining
                take = remaining if remaining < size - pos else size - pos
                if not msg.gap:
                    self._keep(msg, data, pos, pos + take)
                msg.body_size += take
                msg.end_ns = ts
                half.remaining = remaining - take
                pos += take
                if remaining == take:
                    if half.is_request:
                        half.state = _HEAD
                    else:
                        self._response_done(half, out)
            elif state == _CHUNKED:
                pos = self._chunked(half, data, n, size, pos, ts, out)
            elif state == _UNTIL_CLOSE or state == _LOSSY:
                msg = half.msg
                assert msg is not None
                self._keep(msg, data, pos, size)
                msg.body_size += size - pos
                msg.end_ns = ts
                pos = size
            else:  # _SYNC, _DONE: the rest of this segment is skipped
                break

    def _head(self, half: _Half, data: bytes, n: int, size: int, pos: int, ts: int, out: list[Call]) -> int:
        """Read (part of) a message head starting at ``pos``; return the new position."""
        if pos >= n:  # a head would start in bytes that were not captured: its message is lost
            return self._lose(half, size)
        buf = half.buf
        if buf:
            old = len(buf)
            buf += data[pos:n]
            end = buf.find(b"\r\n\r\n", old - 3 if old > 3 else 0)
            if end >= 0:
                half.buf = b""
                return self._start(half, buf[:end], False, half.head_ts, out, pos + end + 4 - old)
            ts = half.head_ts
        else:
            first = data[pos]
            if first == 13 and data.startswith(b"\r\n", pos):  # stray CRLF between messages (RFC 9112 2.2)
                return pos + 2
            is_request = half.is_request
            if not (65 <= first <= 90 if is_request else first == 72):  # 'A'-'Z' / 'H'
                return self._resync(half, size, out)
            end = data.find(b"\r\n\r\n", pos, n)
            if end >= 0:  # the common case, _start inlined
                msg = parse_head(data[pos:end], is_request, False, ts)
                pos = end + 4
                if msg is None:
                    return self._resync(half, pos, out)
                if is_request:
                    pos = self._request_started(half, msg, False, out, pos)
                else:
                    pos = self._response_started(half, msg, False, out, pos)
                if half.state == _LENGTH and half.remaining <= n - pos:
                    return self._whole_body(half, msg, data, pos, ts, out)  # all captured, here
                return pos
            buf = data[pos:n]
            half.head_ts = ts
        if size > n:  # the head runs into bytes that were not captured: parse what we have
            half.buf = b""
            self.stats.truncated += 1
            return self._start(half, buf, True, ts, out, size)
        if len(buf) > MAX_HEAD or (len(buf) >= 8 and not plausible(buf, half.is_request)):
            half.buf = b""
            return self._resync(half, size, out)
        half.buf = buf
        return n

    def _start(self, half: _Half, head: bytes, cut: bool, ts: int, out: list[Call], pos: int) -> int:
        """A complete (or cut) head: build the message and choose how its body is framed."""
        msg = parse_head(head, half.is_request, cut, ts)
        if msg is None:
            return self._resync(half, pos, out)
        if half.is_request:
            return self._request_started(half, msg, cut, out, pos)
        return self._response_started(half, msg, cut, out, pos)

    def _request_started(self, half: _Half, msg: Message, cut: bool, out: list[Call], pos: int) -> int:
        resp = self._resp
        if resp.msg is not None and (resp.state == _LOSSY or resp.state == _UNTIL_CLOSE):
            self._finish(resp, out)  # a new request means the previous response has ended
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            del pending[0]
            self.stats.unpaired += 1
        pending.append(msg)
        half.msg = msg
        if msg.method == "CONNECT":  # whatever follows is tunnel bytes, until the answer says no
            half.state = _SYNC
        elif cut:  # the body's framing may be in the bytes we did not see
            half.state = _LOSSY
            msg.gap = True
        elif msg.chunked:
            msg.framed = True
            half.state, half.chunk = _CHUNKED, _CH_SIZE
        elif msg.length > 0:
            msg.framed = True
            half.state, half.remaining = _LENGTH, msg.length
        else:
            half.state = _HEAD
        return pos

    def _response_started(self, half: _Half, msg: Message, cut: bool, out: list[Call], pos: int) -> int:
        status = msg.status
        if 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints)
            self.stats.extra["interim"] = self.stats.extra.get("interim", 0) + 1
            half.state = _HEAD
            return pos
        half.msg = msg
        req = self._pending[0] if self._pending else None
        method = req.method if req is not None else ""
        if status == 101 or (method == "CONNECT" and 200 <= status < 300):
            self._response_done(half, out)
            self.upgraded = True
            self.stats.extra["upgraded"] = self.stats.extra.get("upgraded", 0) + 1
            self._req.state = half.state = _DONE
            return pos
        if method == "HEAD" or status == 204 or status == 304:
            self._response_done(half, out)
        elif cut:
            half.state = _LOSSY
            msg.gap = True
        elif msg.chunked:
            msg.framed = True
            half.state, half.chunk = _CHUNKED, _CH_SIZE
        elif msg.length >= 0:
            msg.framed = True
            if msg.length == 0:
                self._response_done(half, out)
            else:
                half.state, half.remaining = _LENGTH, msg.length
        else:
            msg.framed = True
            half.state = _UNTIL_CLOSE
        return pos
    def _chunked(
        self, half: _Half, data: bytes, n: int, size: int, pos: int, ts: int, out: list[Call]
    ) -> int:
        """Chunked framing. ``body_size`` counts the chunks' data only, the payload as the semantic
        conventions define http.*.body.size (Content-Length's count: RFC 9112 7.1's decoded length),
        not the chunk-size lines, CRLFs and trailers around it; once a chunk-size line fell into
        uncaptured bytes, what moves after it counts whole (framing unknowable: an upper bound)."""
        msg = half.msg
        assert msg is not None
        msg.end_ns = ts
        while pos < size:
            chunk = half.chunk
            if chunk == _CH_DATA or chunk == _CH_CRLF:
                take = min(half.remaining, size - pos)
                if chunk == _CH_DATA:
                    self._keep(msg, data, pos, pos + take)
                    msg.body_size += take
                pos += take
                half.remaining -= take
                if half.remaining == 0:
                    if chunk == _CH_DATA:
                        half.chunk, half.remaining = _CH_CRLF, 2
                    else:
                        half.chunk = _CH_SIZE
                continue
            if pos >= n:  # a chunk-size line in bytes that were not captured: framing is lost
                msg.body_size += size - pos
                self.stats.truncated += 1
                half.state = _LOSSY
                return size
            if half.buf[-1:] == b"\r" and data[pos : pos + 1] == b"\n":  # CRLF split across reads
                line = half.buf[:-1]
                half.buf = b""
                pos += 1
            else:
                eol = data.find(b"\r\n", pos, n)
                if eol < 0:
                    line = half.buf + data[pos:n]
                    if len(line) > MAX_LINE:
                        half.buf = b""
                        return self._resync(half, size, out)
                    half.buf = line
                    pos = n
                    continue
                if half.buf:
                    line = half.buf + data[pos:eol]
                    half.buf = b""
                else:
                    line = data[pos:eol]
                pos = eol + 2
            if chunk == _CH_SIZE:
                try:
                    length = int(line.partition(b";")[0].strip(), 16)
                except ValueError:
                    length = -1
                if length < 0:
                    return self._resync(half, size, out)
                if length == 0:
                    half.chunk = _CH_TRAILER
                else:
                    half.chunk, half.remaining = _CH_DATA, length
            elif not line:  # the empty line after the last chunk and its trailers
                self._finish(half, out)
                return pos
        return pos

    def _whole_body(self, half: _Half, msg: Message, data: bytes, pos: int, ts: int, out: list[Call]) -> int:
        """A Content-Length body that lies whole in this segment's captured bytes, right after its
        head: what the _LENGTH state would do over it, in one step (the common keep-alive case)."""
        length = half.remaining
        stop = pos + length
        if not msg.gap:  # _keep, for a body that starts here and is all captured
            room = self._body_limit.value - len(msg.body)
            if room > 0 and length > 0:
                msg.body += data[pos : stop if length <= room else pos + room]
        msg.body_size += length
        msg.end_ns = ts
        half.remaining = 0
        if half.is_request:
            half.state = _HEAD
        else:
            self._response_done(half, out)
        return stop

    # -- endings ------------------------------------------------------------------------------
    def _finish(self, half: _Half, out: list[Call]) -> None:
        if half.is_request:
            half.state = _HEAD
        else:
            self._response_done(half, out)

    def _response_done(self, half: _Half, out: list[Call]) -> None:
        resp = half.msg
        half.msg = None
        half.state = _HEAD
        if resp is None:
            return
        if not self._pending:
            self.stats.unpaired += 1
            return
        req = self._pending.pop(0)
        out.append(self._call(req, resp, resp.end_ns))

    def _lose(self, half: _Half, size: int) -> int:
        """A whole message head fell into uncaptured bytes; wait for the next message start."""
        self.stats.resyncs += 1
        half.state = _SYNC
        half.buf = b""
        return size

    def _resync(self, half: _Half, size: int, out: list[Call]) -> int:
        """Garbage: a response being read ends here (its status is known), then skip to a start."""
        if half.msg is not None and not half.is_request:
            self._response_done(half, out)
        return self._lose(half, size)

    def _keep(self, msg: Message, data: bytes, start: int, stop: int) -> None:
        """Keep body bytes [start, stop) of this segment while the prefix is contiguous and short."""
        if msg.gap:
            return
        n = len(data)
        end = stop if stop < n else n
        room = self._body_limit.value - len(msg.body)
        if room > 0 and end > start:
            msg.body += data[start : end if end - start <= room else start + room]
        if stop > n:
            msg.gap = True

    def _call(self, req: Message, resp: Optional[Message], end_ns: int) -> Call:
        if end_ns < req.start_ns:
            # Only after a resync: a response whose head was buffered before this request was seen
            # (its timestamp is where the head began) is paired with it. A span never ends before
            # it starts (Hypothesis found: "HTTP/1. 101 " out, "A " in, then the head cut short).
            end_ns = req.start_ns
        role = self._role
        derived = req.derived  # shared by every request parsed from the same head bytes
        known = derived.get(role) if derived is not None else None
        if known is None:
            known = self._from_head(req, role)
            if derived is not None:
                derived[role] = known
        name, head_attrs = known
        attrs = head_attrs.copy()
        # The request's: the version the client speaks (a server answers an HTTP/1.0 request with
        # its own "HTTP/1.1", RFC 9110 2.5); the response's only when the request line was cut.
        version = req.version or (resp.version if resp is not None else "")
        if version:
            attrs["network.protocol.version"] = version
        if req.user_agent:
            attrs["user_agent.original"] = req.user_agent
        if req.framed:
            attrs["http.request.body.size"] = req.body_size
        error: Optional[str] = ERROR_NO_RESPONSE
        resp_headers: tuple[tuple[str, str], ...] = ()
        resp_body = b""
        resp_size = 0
        message = ""
        if resp is not None:
            attrs["http.response.status_code"] = resp.status
            if resp.framed:
                attrs["http.response.body.size"] = resp.body_size
            error = status_error(role, resp.status) if resp.status >= 400 else None
            if resp.cut_short and error is None:
                # The status line said it went well; the body never all arrived (or left).
                error, message = ERROR_CUT_SHORT, CUT_SHORT_MESSAGE
            resp_headers, resp_body, resp_size = resp.headers, resp.body, resp.body_size
        return Call(
            protocol="http", role=role, start_ns=req.start_ns, end_ns=end_ns, name=name,
            attributes=attrs, error_type=error, status_message=message, traceparent=req.traceparent,
            tracestate=req.tracestate,
            request_headers=req.headers, response_headers=resp_headers, request_body=req.body,
            response_body=resp_body, request_size=req.body_size, response_size=resp_size,
        )  # fmt: skip

    def _from_head(self, req: Message, role: Role) -> tuple[str, Attributes]:
        """Span name and the attributes that depend on the request head alone (and the role)."""
        attrs: Attributes = {}
        name = method_attributes(req.method, attrs)
        scheme, path, query = split_target(req.target)
        if req.method != "CONNECT":
            attrs["url.path"] = path
            if query:
                attrs["url.query"] = query
        attrs["url.scheme"] = scheme or "http"
        host = req.host or (req.target if req.method == "CONNECT" else "")
        if host:
            parsed = _HOSTS.get(host)
            if parsed is None:
                parsed = parse_host(host)
                if len(_HOSTS) >= HOSTS_MAX:
                    _HOSTS.clear()
                _HOSTS[host] = parsed
            address, port = parsed
            attrs["server.address"] = address
            attrs["server.port"] = port
            if role == Role.CLIENT and req.method != "CONNECT":
                attrs["url.full"] = f"{scheme or 'http'}://{host}{path}" + (f"?{query}" if query else "")
        return name, attrs


SPEC = ProtocolSpec(name="http", probe="http", looks_like=looks_like, new_parser=Http1Parser)
