"""HTTP semantics shared by the HTTP/1.x parser (and usable by HTTP/2): OpenTelemetry naming.

Follows the stable OpenTelemetry HTTP semantic conventions (v1.44):
https://opentelemetry.io/docs/specs/semconv/http/http-spans/
- ``http.request.method`` only takes the methods of RFC 9110 plus PATCH; anything else is
  ``_OTHER`` with the wire value in ``http.request.method_original``, and the span is named ``HTTP``.
- Span names are ``{method}`` alone: the wire shows the target, never the route template, and a raw
  path would explode span-name cardinality.
- Status: a server span is an error only on 5xx (4xx is the client's fault); a client span on 4xx
  and 5xx. ``error.type`` is then the status code as a string.
"""

from __future__ import annotations

from typing import Final, Optional, Union

from hostagent.model import Role

KNOWN_METHODS: Final = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))

# error.type when the connection ended before any (final) response: OTel asks for a
# low-cardinality, component-specific identifier when there is no status code.
ERROR_NO_RESPONSE: Final = "closed_without_response"
# error.type when the connection closed in the middle of a response body its head framed (either
# end gave up: a client that stopped reading, a server that died mid-write); the name and message
# are the HTTP/2 parser's for a stream open at close.
ERROR_CUT_SHORT: Final = "connection_closed"
CUT_SHORT_MESSAGE: Final = "connection closed before the response ended"


class BodyLimit:
    """Body bytes the HTTP parsers keep per message (registry.body_limit of [capture]).

    One value shared by every HTTP parser of a tracker and set when the settings change
    (hostagent.assembly), read each time body bytes are kept: a larger ``body_max_bytes`` reaches
    the next message of every open connection, not only of those opened after it (a keep-alive
    or HTTP/2 connection lives as long as its pool), as [capture] raw_sql does (sql.RawSql)."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def body_limit_of(limit: Union[int, BodyLimit]) -> BodyLimit:
    """The shared limit given, or a parser's own fixed one for a plain number."""
    return limit if isinstance(limit, BodyLimit) else BodyLimit(limit)


def method_attributes(method: str, attrs: dict) -> str:
    """Set the method attributes on ``attrs``; return the span name."""
    if method in KNOWN_METHODS:
        attrs["http.request.method"] = method
        return method
    attrs["http.request.method"] = "_OTHER"
    attrs["http.request.method_original"] = method
    return "HTTP"


def status_error(role: Role, status: int) -> Optional[str]:
    """``error.type`` for a final status code, or None when the span is not an error."""
    if status >= 500 or (status >= 400 and role == Role.CLIENT):
        return str(status)
    return None


def split_target(target: str) -> tuple[str, str, str]:
    """(scheme, path, query) of a request target; scheme is "" unless absolute-form.

    Origin-form ``/a?b`` is by far the common case; absolute-form ``http://h/a?b`` is what clients
    send to forward proxies. The fragment never travels on the wire.
    """
    scheme = ""
    if target[:1] != "/" and "://" in target:
        scheme, _, rest = target.partition("://")
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path, _, query = target.partition("?")
    return scheme, path, query


def parse_host(host: str, default_port: int = 80) -> tuple[str, int]:
    """``Host`` header value -> (address, port); IPv6 literals lose their brackets."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            rest = host[end + 1 :]
            port = rest[1:] if rest.startswith(":") else ""
            return host[1:end], int(port) if port.isdigit() else default_port
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        return name, int(port)
    return host, default_port
