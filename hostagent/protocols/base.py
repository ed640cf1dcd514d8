"""The contract every protocol module fulfils.

A protocol module exposes one ``ProtocolSpec``:
- ``looks_like(data, direction)``: an O(1) prefilter over the first captured bytes of a
  connection (either direction). It must be cheap and may be wrong in the "yes" direction only.
- ``new_parser()``: a fresh per-connection parser (``StreamParser``). Parsers are pure: no I/O,
  no globals, no clocks. They take Segments in connection order and return finished Calls.

Parsers never raise on bad input: on garbage they resynchronise (skip to something that parses)
and count it in ``stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional, Protocol

# ParserStats lives with the records (compiled: a parser makes one per connection)
from hostagent.model import Call, Direction, ParserStats, Role, Segment


class StreamParser(Protocol):
    """Per-connection decoder. ``feed`` gets each Segment once, in order.

    A parser with state across messages also has ``lost() -> list[Call]``, called when the kernel
    did not capture some calls of the connection before the next Segment (capture.tracker): one
    that pairs requests with responses in order must forget what waits for an answer rather than
    pair it with a later one; HTTP/2 must stop trusting its HPACK tables. DNS (message ids, one
    datagram each) does not need it."""

    def feed(self, segment: Segment) -> list[Call]: ...

    def close(self, ts_ns: int) -> list[Call]:
        """The connection closed: finish what can be finished (close-delimited bodies)."""
        ...


@dataclass(frozen=True)
class ProtocolSpec:
    name: str  # protocol name, as in Call.protocol ("http", "postgresql"...)
    probe: str  # the [probes] enabled name that turns it on ("http", "postgres"...)
    looks_like: Callable[[bytes, Direction], bool]
    new_parser: Callable[[], StreamParser]
    transports: tuple[str, ...] = ("tcp",)  # "udp" for DNS
    # A parser told the socket's transport ("tcp"/"udp"), for a protocol framed differently on
    # each (DNS: a length prefix on TCP); None: ``new_parser()``.
    new_parser_for: Optional[Callable[[str], StreamParser]] = None


HELD_SEGMENTS_MAX = 64  # segments held while the roles are not known yet
HELD_BYTES_MAX = 4096
GUESS_BYTES = 64  # bytes of one direction a role guess looks at


class RoleGuess:
    """Which direction of a connection is the client's, and the segments held until that is known.

    A database connection seen from its first byte starts with the client; one picked up later
    (the agent started after it) may start with either side, a message may come in pieces, and a
    parser cannot pair anything before it knows. ``guess(data, direction)`` is the protocol's
    rule: given the first ``GUESS_BYTES`` that one direction's held segments carry (joined), the
    client's direction, or None to wait for more. Held past ``HELD_SEGMENTS_MAX`` segments or
    ``HELD_BYTES_MAX`` bytes, the oldest is dropped and counted as a resync."""

    __slots__ = ("_guess", "_held", "_stats", "client")

    def __init__(self, guess: Callable[[bytes, Direction], Optional[Direction]], stats: ParserStats) -> None:
        self._guess = guess
        self._stats = stats
        self._held: list[Segment] = []
        self.client: Optional[Direction] = None  # the direction the client's bytes go, once known

    def ready(self, segment: Segment) -> list[Segment]:
        """The segments to parse now: ``segment`` alone once the client is known; before, none
        (it is held) until it decides, then every one held, ``segment`` last, in arrival order."""
        if self.client is not None:
            return [segment]
        held = self._held
        held.append(segment)
        direction = segment.direction
        first = b"".join([s.data for s in held if s.direction == direction])[:GUESS_BYTES]
        self.client = self._guess(first, direction)
        if self.client is None:
            if len(held) > HELD_SEGMENTS_MAX or sum(len(s.data) for s in held) > HELD_BYTES_MAX:
                held.pop(0)
                self._stats.resyncs += 1
            return []
        self._held = []
        return held

    @property
    def role(self) -> Role:
        """The parsed process's side: the client when its own writes (EGRESS) are the client's."""
        return Role.CLIENT if self.client == Direction.EGRESS else Role.SERVER
