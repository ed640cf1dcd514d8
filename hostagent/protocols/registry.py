"""The ordered list of protocols the capture stage tries on a new connection.

Order matters: the first spec whose ``looks_like`` accepts the first bytes wins, and the choice
sticks for the connection.
- PostgreSQL and MySQL first: strict binary framing (length + protocol version / greeting) that
  nothing else produces by accident; HTTP/2 also accepts a bare plausible frame header (a grpcio
  server writes SETTINGS before it reads the preface), so it must not see their bytes first.
- HTTP/2 before HTTP/1: the prior-knowledge preface ``PRI * HTTP/2.0`` is itself a valid-looking
  HTTP/1 request line.
- HTTP/1 before Redis: Redis inline commands are bare words, which an HTTP method also is.
- DNS last: it is tried on datagram sockets, where the others never match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache, partial
from typing import Optional

from hostagent.protocols import dns, http1, http2, mysql, postgres, redis
from hostagent.protocols.base import ProtocolSpec, StreamParser
from hostagent.protocols.http_common import BodyLimit
from hostagent.protocols.sql import RawSql
from hostagent.settings import CaptureSettings

PROTOCOLS: tuple[ProtocolSpec, ...] = (
    postgres.SPEC,
    mysql.SPEC,
    http2.SPEC,
    http1.SPEC,
    redis.SPEC,
    dns.SPEC,
)


# SQL parsers that can keep literals in db.query.text when [capture] raw_sql is on.
_SQL_PARSERS: dict[str, Callable[[RawSql], StreamParser]] = {
    postgres.SPEC.name: postgres.new_parser,
    mysql.SPEC.name: mysql.new_parser,
}


# HTTP parsers keep a body prefix per message for the traces stage, which trims it to the span's
# body_max_bytes: they must keep at least the largest body a span may carry.
_BODY_FACTORIES: dict[str, Callable[..., StreamParser]] = {
    http1.SPEC.name: http1.Http1Parser,
    http2.SPEC.name: http2.Http2Parser,
}


def body_limit(capture: CaptureSettings) -> int:
    """Body bytes the HTTP parsers keep per message: the largest ``body_max_bytes`` of the base
    settings and of every override when any span may carry a body; never less than the default
    (1024), which is what they keep when bodies are off (as before)."""
    if not capture.bodies and not any(o.bodies for o in capture.overrides):
        return http1.BODY_LIMIT
    limits = [o.body_max_bytes for o in capture.overrides if o.body_max_bytes is not None]
    return max(http1.BODY_LIMIT, capture.body_max_bytes, *limits)


@lru_cache(maxsize=64)
def for_probes(enabled: frozenset[str], raw_sql: Optional[RawSql] = None,
               bodies: Optional[BodyLimit] = None) -> tuple[ProtocolSpec, ...]:
    """The specs whose probe is enabled, in registry order (cached: called per new connection).

    With ``raw_sql``, the SQL parsers read that switch per call, so that flipping it (a settings
    change) reaches the connections already open and the specs stay the same; without, they
    sanitise. ``bodies``, the same way: the body bytes the HTTP parsers keep per message, read as
    they keep them (``body_limit`` of the settings); without, ``http1.BODY_LIMIT``."""
    specs = []
    for spec in PROTOCOLS:
        if spec.probe not in enabled:
            continue
        if raw_sql is not None and spec.name in _SQL_PARSERS:
            spec = replace(spec, new_parser=partial(_SQL_PARSERS[spec.name], raw_sql))
        if bodies is not None and spec.name in _BODY_FACTORIES:
            spec = replace(spec, new_parser=partial(_BODY_FACTORIES[spec.name], body_limit=bodies))
        specs.append(spec)
    return tuple(specs)
