"""One HTTP/2 stream's state, and the Call it becomes (HTTP or gRPC semantic conventions).

HTTP/2 Calls follow the HTTP conventions (as HTTP/1.x, with ``network.protocol.version`` "2");
streams whose content-type is application/grpc follow hostagent.protocols.grpc. Header names
are lower-case on the wire (RFC 9113 section 8.2.1); pseudo-headers (``:method``...) become
attributes and are left out of request_headers/response_headers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hostagent.model import Attributes, Call, Direction, Role
from hostagent.protocols import grpc
from hostagent.protocols.http2_hpack import Header

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
HEADERS_INCOMPLETE = "hostagent.http2.headers_incomplete"  # some HPACK fields were unknowable
# The stream's end (END_STREAM, gRPC trailers) went by in bytes the capture cut (a big message);
# the span ends at its last frame seen and says no outcome it did not see.
END_UNSEEN = "hostagent.http2.end_unseen"
# A body size the parser cannot know (DATA frames went by unseen): the span then claims no size and
# says its body truncated (hostagent.traces.wire), rather than a size counted from the frames seen.
SIZE_UNKNOWN = -1


@dataclass(slots=True)
class Stream:
    sid: int
    initiator: Direction  # the direction that carried the request HEADERS
    start_ns: int
    end_ns: int
    request: list[Header]
    response: Optional[list[Header]] = None  # final (non-1xx) response headers
    trailers: list[Header] = field(default_factory=list)
    incomplete: bool = False
    frames_lost: bool = False  # in flight when frames went by unseen (Http2Parser._frames_lost)
    request_lost: bool = False  # ...and its request had not ended then: the request's size is unknown too
    request_ended: bool = False
    request_size: int = 0
    response_size: int = 0
    request_body: bytearray = field(default_factory=bytearray)
    response_body: bytearray = field(default_factory=bytearray)
    request_messages: grpc.MessageCounter = field(default_factory=grpc.MessageCounter)
    response_messages: grpc.MessageCounter = field(default_factory=grpc.MessageCounter)


def _get(headers: Optional[list[Header]], name: str) -> Optional[str]:
    if headers:
        for n, v in headers:
            if n == name:
                return v
    return None


def _plain(headers: Optional[list[Header]]) -> tuple[tuple[str, str], ...]:
    return tuple((n.lower(), v) for n, v in headers or () if not n.startswith(":"))


def _grpc_named(s: Stream) -> bool:
    """A header only gRPC sends (``grpc-*``, PROTOCOL-HTTP2.md) was decoded: on a channel opened
    before the agent looked, content-type and grpc-status come indexed from an HPACK table it never
    saw, while grpc-message (a literal each time) still says the stream is gRPC."""
    for headers in (s.request, s.response, s.trailers):
        for n, _ in headers or ():
            if n.startswith("grpc-"):
                return True
    return False


def _authority(value: Optional[str]) -> tuple[Optional[str], Optional[int]]:
    if not value:
        return None, None
    host, port = value, None
    if value.startswith("["):  # [v6]:port
        close = value.find("]")
        if close > 0:
            host = value[1:close]
            rest = value[close + 1 :]
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
    elif value.count(":") == 1:
        h, _, p = value.partition(":")
        if p.isdigit():
            host, port = h, int(p)
    return host, port


def to_call(s: Stream, reset: Optional[str] = None, message: str = "", grpc_connection: bool = False) -> Call:
    """The Call for a finished stream. ``reset``: HTTP/2 error code name when it ended abnormally.
    ``grpc_connection``: earlier streams on this connection were gRPC, so a stream whose
    content-type could not be decoded (HPACK table lost) is taken as gRPC too."""
    role = Role.CLIENT if s.initiator == Direction.EGRESS else Role.SERVER
    path = _get(s.request, ":path")
    host, port = _authority(_get(s.request, ":authority") or _get(s.request, "host"))
    attrs: Attributes = {"network.protocol.name": "http", "network.protocol.version": "2"}
    if host is not None:
        attrs["server.address"] = host
        if port is not None:
            attrs["server.port"] = port
    if s.incomplete:
        attrs[HEADERS_INCOMPLETE] = True
    response_headers = _plain(s.response) + _plain(s.trailers)
    grpc_status = _get(s.trailers, "grpc-status") or _get(s.response, "grpc-status")
    content_type = _get(s.request, "content-type") or _get(s.response, "content-type")
    error_type: Optional[str] = None
    grpc_by_connection = s.incomplete and content_type is None and (grpc_connection or _grpc_named(s))
    if grpc.is_grpc(content_type) or grpc_status is not None or grpc_by_connection:
        protocol = "grpc"
        status = grpc.status_name(grpc_status) if grpc_status is not None else None
        if status is None and reset is not None:
            timeout = _get(s.request, "grpc-timeout")
            status = grpc.status_from_reset(reset, grpc.timeout_ns(timeout), s.end_ns - s.start_ns)
            if status == "DEADLINE_EXCEEDED":
                # what the client's application saw; the reset code alone would say CANCEL
                reset = status
                message = f"deadline exceeded (grpc-timeout {timeout}): {message}"
        rpc_attrs, name = grpc.call_attributes(path, status)
        attrs.update(rpc_attrs)
        if s.request_messages.count is not None:
            attrs[grpc.REQUEST_COUNT] = s.request_messages.count
        if s.response_messages.count is not None and s.response is not None:
            attrs[grpc.RESPONSE_COUNT] = s.response_messages.count
        if status is not None and grpc.is_error(status, role):
            error_type = reset if grpc_status is None and reset is not None else status
        elif status is None and reset is not None:
            error_type = reset
        grpc_message = _get(s.trailers, "grpc-message") or _get(s.response, "grpc-message")
        if grpc_message:
            message = grpc.decode_message(grpc_message)
    else:
        # "http2", not "http": the pipeline keys probe enablement (PROBE_OF_PROTOCOL), metrics
        # and sampling on Call.protocol, and "http" would tie these calls to the HTTP/1 probe.
        protocol = "http2"
        method = _get(s.request, ":method")
        name = "HTTP"
        if method is not None:
            if method in KNOWN_METHODS:
                attrs["http.request.method"] = method
                name = method
            else:
                attrs["http.request.method"] = "_OTHER"
                attrs["http.request.method_original"] = method
        if path is not None:
            p, sep, q = path.partition("?")
            attrs["url.path"] = p
            if sep:
                attrs["url.query"] = q
        scheme = _get(s.request, ":scheme")
        if scheme:
            attrs["url.scheme"] = scheme
        ua = _get(s.request, "user-agent")
        if ua is not None:
            attrs["user_agent.original"] = ua
        status_raw = _get(s.response, ":status")
        if status_raw is not None and status_raw.isdigit():
            code = int(status_raw)
            attrs["http.response.status_code"] = code
            if code >= 500 or (code >= 400 and role == Role.CLIENT):
                error_type = status_raw
        if reset is not None and error_type is None:
            error_type = reset
    # Positional, in Call's field order: keywords cost ~0.6 us more per Call (model.Call)
    return Call(
        protocol,
        role,
        s.start_ns,  # start_ns
        s.end_ns,  # end_ns
        name,
        attrs,  # attributes
        error_type,
        message if error_type is not None else "",  # status_message
        _get(s.request, "traceparent"),  # traceparent
        _get(s.request, "tracestate"),  # tracestate
        _plain(s.request),  # request_headers
        response_headers,
        bytes(s.request_body),  # request_body
        bytes(s.response_body),  # response_body
        # DATA frames may have gone by unseen: a size counted from those seen would be too small. A
        # request that had ended before (END_STREAM seen) was counted whole; a response never was.
        SIZE_UNKNOWN if s.request_lost else s.request_size,  # request_size
        SIZE_UNKNOWN if s.frames_lost else s.response_size,  # response_size
        None,  # conn: the tracker's
        None,  # service
        s.sid,  # stream_id
    )
