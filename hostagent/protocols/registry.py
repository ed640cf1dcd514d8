"""The ordered list of protocols the capture stage tries on a new connection.

Order matters: the first spec whose ``looks_like`` accepts the first bytes wins, and the choice
sticks for the connection. The HTTP/2 preface is tried before HTTP/1 because both start with
ASCII; binary protocols with strict framing (PostgreSQL, MySQL) come before Redis, whose inline
commands are plain words that other text protocols could resemble.
"""

from __future__ import annotations

from hostagent.protocols import http1
from hostagent.protocols.base import ProtocolSpec

PROTOCOLS: tuple[ProtocolSpec, ...] = (
    http1.SPEC,
)


def for_probes(enabled: frozenset[str]) -> tuple[ProtocolSpec, ...]:
    """The specs whose probe is enabled, in registry order."""
    return tuple(spec for spec in PROTOCOLS if spec.probe in enabled)
