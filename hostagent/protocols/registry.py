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
from hostagent.protocols.sql import RawSql

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


@lru_cache(maxsize=64)
def for_probes(enabled: frozenset[str], raw_sql: Optional[RawSql] = None) -> tuple[ProtocolSpec, ...]:
    """The specs whose probe is enabled, in registry order (cached: called per new connection).

    With ``raw_sql``, the SQL parsers read that switch per call, so that flipping it (a settings
    change) reaches the connections already open and the specs stay the same; without, they
    sanitise."""
    specs = []
    for spec in PROTOCOLS:
        if spec.probe not in enabled:
            continue
        if raw_sql is not None and spec.name in _SQL_PARSERS:
            spec = replace(spec, new_parser=partial(_SQL_PARSERS[spec.name], raw_sql))
        specs.append(spec)
    return tuple(specs)
