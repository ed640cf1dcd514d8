"""HTTP/1.x message heads (RFC 9112 sections 3, 4 and 5): start line + header fields -> ``Message``.

Pure functions over bytes, used by ``hostagent.protocols.http1`` (which frames bodies and pairs
requests with responses). A head is parsed with one latin-1 decode and ``str.split``; then each
header line costs one dict lookup when it was seen before (a bounded memo of the split lines), and
a whole head seen before costs one lookup on its bytes (a bounded memo of the parsed fields).
"""

from __future__ import annotations

from typing import Final, Optional

from hostagent.model import Attributes, Role

# Request-line prefixes accepted as the start of a request: RFC 9110 methods, PATCH and the
# common WebDAV / cache extensions. A request with another method is still parsed inside a
# connection already known to be HTTP; it just cannot start one or end a resync.
METHODS = (
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "PURGE", "QUERY",
    "REPORT", "SEARCH", "MKCALENDAR",
)  # fmt: skip
REQUEST_STARTS: Final = tuple(m.encode() + b" " for m in METHODS)
STATUS_START: Final = b"HTTP/1."
STARTS: Final = (*REQUEST_STARTS, STATUS_START)

MAX_HEADERS: Final = 64  # headers kept per message; the rest are still framed correctly


class Message:
    """One request or response while it is being read; mutable, never leaves the HTTP/1 modules.

    Compiled (mypyc) a native class: the defaults below are set in C when one is made. From the
    source, they live on the class: a new message then costs two attribute writes.
    """

    method: str = ""
    target: str = ""
    version: str = ""
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    host: str = ""
    user_agent: str = ""
    traceparent: Optional[str] = None
    tracestate: Optional[str] = None
    length: int = -1  # Content-Length, -1 when absent
    chunked: bool = False
    framed: bool = False  # the message has a body whose size we report
    body: bytes = b""  # contiguous captured prefix of the body (decoded when chunked)
    body_size: int = 0  # body bytes on the wire, captured or not
    gap: bool = False  # uncaptured bytes were skipped: nothing after them is kept
    # The connection closed before the body its head announced (Content-Length, chunked) ended.
    cut_short: bool = False
    # Shared by every message parsed from the same (memoised) head bytes: what the Call builder
    # derives from the head alone (span name, URL and server attributes), computed once per head
    # and role. None when the head was not memoised (cut, or too long).
    derived: Optional[dict[Role, tuple[str, Attributes]]] = None

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.end_ns = start_ns


def _copy_head(head: Message, ts: int) -> Message:
    """A new message at ``ts`` with what ``head`` parsed (a memoised head: no body state yet)."""
    msg = Message(ts)
    msg.method = head.method
    msg.target = head.target
    msg.version = head.version
    msg.status = head.status
    msg.headers = head.headers
    msg.host = head.host
    msg.user_agent = head.user_agent
    msg.traceparent = head.traceparent
    msg.tracestate = head.tracestate
    msg.length = head.length
    msg.chunked = head.chunked
    msg.derived = head.derived
    return msg


def parse_head(head: bytes, is_request: bool, cut: bool, ts: int) -> Optional[Message]:
    """Start line and headers; None when it is not an HTTP/1 head. ``cut``: the tail is missing."""
    heads = _REQUEST_HEADS if is_request else _RESPONSE_HEADS
    if not cut:
        memo = heads.get(head)
        if memo is not None:
            return _copy_head(memo, ts)
    parsed = _parse_head_text(head, is_request, cut, ts)
    if parsed is not None and not cut and len(head) <= HEAD_MEMO_BYTES:
        if len(heads) >= HEAD_MEMO_MAX:
            heads.clear()
        if is_request:
            parsed.derived = {}
        # A copy of what was parsed from the head (immutable values, and the shared derived box),
        # before the parser goes on with this message's body.
        heads[head] = _copy_head(parsed, 0)
    return parsed


def _parse_head_text(head: bytes, is_request: bool, cut: bool, ts: int) -> Optional[Message]:
    lines = head.decode("latin-1").split("\r\n")
    first = lines[0]
    msg = Message(ts)
    if is_request:
        method, _, rest = first.partition(" ")
        target, _, version = rest.rpartition(" ")
        if not version.startswith("HTTP/1."):
            if not (cut and len(lines) == 1):  # only a cut request line may lack its version
                return None
            target, version = rest, ""
        if not method.isalpha() or not target or " " in target:
            return None
        msg.method, msg.target, msg.version = method, target, version[5:]
    else:
        version, _, rest = first.partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
            return None
        msg.version, msg.status = version[5:], int(code)
    headers = []
    memo = _LINES
    # A cut head's last line is incomplete (a value may have lost digits): leave it out.
    for line in lines[1 : min(len(lines) - 1 if cut else len(lines), MAX_HEADERS + 1)]:
        header = memo.get(line)
        if header is None:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            # RFC 9112 5.1: no whitespace allowed between the name and the colon
            header = (name.lower(), value.strip())
            if len(line) <= LINE_MEMO_CHARS:
                if len(memo) >= LINE_MEMO_MAX:
                    memo.clear()
                memo[line] = header
        headers.append(header)
        name, value = header
        if name in _SPECIAL:
            if name == "content-length":
                if not value.isdigit():
                    return None
                msg.length = int(value)
            elif name == "transfer-encoding":
                msg.chunked = value.lower().endswith("chunked")
            elif name == "host":
                msg.host = value
            elif name == "user-agent":
                msg.user_agent = value
            elif name == "traceparent":
                msg.traceparent = value
            elif name == "tracestate":
                msg.tracestate = value
    msg.headers = tuple(headers)
    return msg


def plausible(buf: bytes, is_request: bool) -> bool:
    """Whether the first 8+ bytes of a head still being buffered can start a message."""
    if not is_request:
        return buf.startswith(STATUS_START)
    space = buf.find(b" ", 0, 16)
    return space > 0 and buf[:space].isalpha()


# Whole heads seen before -> what parsing them set on the Message. A client repeating a request
# (no per-request header such as traceparent or a request id) and a server's answers to it (their
# Date header changes once a second) parse with one dict lookup on bytes. Bounded; complete heads
# only, never a cut one. A cache of a pure function of its key (no parser state).
HEAD_MEMO_MAX: Final = 1024
HEAD_MEMO_BYTES: Final = 1024
_REQUEST_HEADS: Final[dict[bytes, Message]] = {}
_RESPONSE_HEADS: Final[dict[bytes, Message]] = {}

# Header line -> (lower-case name, stripped value). The same lines (Server, Content-Type, Host,
# Accept...) recur on nearly every message of every connection; splitting each once saves most of
# a head's parsing. A cache of a pure function of its key (no parser state), bounded.
LINE_MEMO_MAX: Final = 4096
LINE_MEMO_CHARS: Final = 256  # longer lines (cookies, tokens) are rarely repeated: split every time
_LINES: Final[dict[str, tuple[str, str]]] = {}

_SPECIAL: Final = frozenset(
    ("content-length", "transfer-encoding", "host", "user-agent", "traceparent", "tracestate")
)
