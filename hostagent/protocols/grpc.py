"""gRPC over HTTP/2: what turns an HTTP/2 stream into a gRPC call.

https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
https://github.com/open-telemetry/semantic-conventions/blob/v1.44.0/docs/rpc/grpc.md

gRPC is decoded inside the HTTP/2 parser (probe "http2" covers both): a stream whose request or
response ``content-type`` starts with ``application/grpc`` (or whose response carries
``grpc-status``) becomes a Call with protocol "grpc". This module holds the gRPC-only parts:
status names, the span status rules of semantic conventions v1.44, and counting the
length-prefixed messages in DATA.

Attributes (v1.44): ``rpc.system.name`` = "grpc"; ``rpc.method`` = "pkg.Service/Method" from
``:path``; ``rpc.response.status_code`` = status name from ``grpc-status`` (trailers, or headers of
a trailers-only response; when a stream is reset before any status, the status gRPC derives from
the HTTP/2 error code, as the client library does). v1.44 says ``rpc.method`` MUST be ``_OTHER``
when the method is not recognised; the wire tells us that only through UNIMPLEMENTED, so such a
call gets ``rpc.method`` = "_OTHER", ``rpc.method_original`` = the path's method and the span
name "grpc". v1.44 defines no message-count attribute (``rpc.message.*`` are event attributes), so
counts go in ``hostagent.rpc.request.message_count`` / ``hostagent.rpc.response.message_count``,
only when every message prefix was seen.

Errors: client side, every status but OK; server side, only UNKNOWN, DEADLINE_EXCEEDED,
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS (v1.44). ``error.type`` is the status name, or the
HTTP/2 error code name (e.g. "CANCEL") when the stream was reset before a status came.

Deadlines: a client library whose deadline passes resets the stream with CANCEL (no status goes
on the wire) and reports DEADLINE_EXCEEDED to its application. So a RST_STREAM(CANCEL) of a
request that carried ``grpc-timeout``, coming once that timeout has run from the request (less
``DEADLINE_SLACK``), is DEADLINE_EXCEEDED (status and error.type), on both sides; earlier it is a
cancel (CANCELLED).
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import unquote

from hostagent.model import Attributes, Role

STATUS_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
    "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip

SERVER_ERRORS = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})

# PROTOCOL-HTTP2.md "Errors": the status a client derives from RST_STREAM's HTTP/2 error code.
_STATUS_FROM_H2 = {
    "REFUSED_STREAM": "UNAVAILABLE",
    "CANCEL": "CANCELLED",
    "ENHANCE_YOUR_CALM": "RESOURCE_EXHAUSTED",
    "INADEQUATE_SECURITY": "PERMISSION_DENIED",
}

REQUEST_COUNT = "hostagent.rpc.request.message_count"
RESPONSE_COUNT = "hostagent.rpc.response.message_count"


def is_grpc(content_type: Optional[str]) -> bool:
    return content_type is not None and content_type.startswith("application/grpc")


def status_name(raw: str) -> str:
    """``grpc-status`` value -> name; an unknown number stays a number (low cardinality still)."""
    try:
        code = int(raw)
    except ValueError:
        return raw
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else str(code)


def status_from_h2_error(h2_error: str) -> str:
    return _STATUS_FROM_H2.get(h2_error, "INTERNAL")


# PROTOCOL-HTTP2.md: Timeout -> "grpc-timeout" TimeoutValue TimeoutUnit, at most 8 digits.
_TIMEOUT_UNIT_NS = {"H": 3_600_000_000_000, "M": 60_000_000_000, "S": 1_000_000_000, "m": 1_000_000,
                    "u": 1_000, "n": 1}
# The wire's timeout may exceed the time really left: gRPC C-core rounds it up (to 100 ms units from
# 1 s, coarser further up: under 10 %), and the request is written after the deadline started.
DEADLINE_SLACK = 10  # percent of the timeout


def timeout_ns(raw: Optional[str]) -> Optional[int]:
    """``grpc-timeout`` value -> ns; None when absent or malformed."""
    if raw is None or not 2 <= len(raw) <= 9:
        return None
    digits, scale = raw[:-1], _TIMEOUT_UNIT_NS.get(raw[-1])
    if scale is None or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits) * scale


def status_from_reset(h2_error: str, timeout: Optional[int], elapsed_ns: int) -> str:
    """The status a client derives from a reset stream; ``timeout``: the request's grpc-timeout
    (ns) if any, ``elapsed_ns``: from the request to the reset."""
    if h2_error == "CANCEL" and timeout is not None and elapsed_ns * 100 >= timeout * (100 - DEADLINE_SLACK):
        return "DEADLINE_EXCEEDED"
    return status_from_h2_error(h2_error)


def is_error(status: str, role: Role) -> bool:
    if status == "OK":
        return False
    return role != Role.SERVER or status in SERVER_ERRORS


def method_from_path(path: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service/Method`` (v1.44 rpc.method)."""
    return path[1:] if path.startswith("/") else path


def decode_message(raw: str) -> str:
    """``grpc-message`` is percent-encoded UTF-8."""
    return unquote(raw, errors="replace")


def call_attributes(path: Optional[str], status: Optional[str]) -> tuple[Attributes, str]:
    """(rpc.* attributes, span name) for one call."""
    attrs: Attributes = {"rpc.system.name": "grpc"}
    if status is not None:
        attrs["rpc.response.status_code"] = status
    if path is None:
        return attrs, "grpc"
    method = method_from_path(path)
    if status == "UNIMPLEMENTED":
        attrs["rpc.method"] = "_OTHER"
        attrs["rpc.method_original"] = method
        return attrs, "grpc"
    attrs["rpc.method"] = method
    return attrs, method


class MessageCounter:
    """Counts gRPC length-prefixed messages in one direction's DATA bytes.

    Each message is 1 byte compressed-flag + 4 bytes big-endian length + message. Bytes the kernel
    did not capture are skipped by count; if a message prefix falls among them the count is no
    longer knowable and ``count`` becomes None.
    """

    __slots__ = ("_head", "_remaining", "count")

    def __init__(self) -> None:
        self.count: Optional[int] = 0
        self._remaining = 0  # message bytes still to pass
        self._head = bytearray()  # prefix bytes seen so far (< 5)

    def feed(self, data: bytes) -> None:
        if self.count is None:
            return
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining:
                step = min(self._remaining, end - pos)
                self._remaining -= step
                pos += step
                continue
            take = min(5 - len(self._head), end - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) == 5:
                self.count += 1
                self._remaining = int.from_bytes(self._head[1:5], "big")
                self._head.clear()

    def skip(self, n: int) -> None:
        """``n`` bytes went by uncaptured."""
        if self.count is None or n <= 0:
            return
        if self._head or n > self._remaining:
            self.count = None
        else:
            self._remaining -= n
