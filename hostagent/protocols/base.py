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
from dataclasses import dataclass, field
from typing import Protocol

from hostagent.model import Call, Direction, Segment


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


@dataclass
class ParserStats:
    """Counters a parser keeps; the capture stage sums them for status and metrics."""

    resyncs: int = 0  # times garbage was skipped to find the next message
    unpaired: int = 0  # requests or responses without a counterpart
    truncated: int = 0  # messages whose head was not fully captured
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolSpec:
    name: str  # protocol name, as in Call.protocol ("http", "postgresql"...)
    probe: str  # the [probes] enabled name that turns it on ("http", "postgres"...)
    looks_like: Callable[[bytes, Direction], bool]
    new_parser: Callable[[], StreamParser]
    transports: tuple[str, ...] = ("tcp",)  # "udp" for DNS
