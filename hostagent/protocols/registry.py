"""The ordered list of protocols the capture stage tries on a new connection.

Order matters: the first spec whose ``looks_like`` accepts the first bytes wins, and the choice
sticks for the connection.
- HTTP/2 before HTTP/1: the prior-knowledge preface ``PRI * HTTP/2.0`` is itself a valid-looking
  HTTP/1 request line.
- PostgreSQL and MySQL next: strict binary framing (length + protocol version / greeting) that
  text protocols cannot produce by accident.
- HTTP/1 before Redis: Redis inline commands are bare words, which an HTTP method also is.
- DNS last: it is tried on datagram sockets, where the others never match.
"""

from __future__ import annotations

from hostagent.protocols import dns, http1, http2, mysql, postgres, redis
from hostagent.protocols.base import ProtocolSpec

PROTOCOLS: tuple[ProtocolSpec, ...] = (
    http2.SPEC,
    postgres.SPEC,
    mysql.SPEC,
    http1.SPEC,
    redis.SPEC,
    dns.SPEC,
)


def for_probes(enabled: frozenset[str]) -> tuple[ProtocolSpec, ...]:
    """The specs whose probe is enabled, in registry order."""
    return tuple(spec for spec in PROTOCOLS if spec.probe in enabled)
