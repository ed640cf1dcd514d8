"""Turn a recording from tests/fixtures/db into Segments for a parser, from either side.

``side="client"``: the traced process is the client (its own writes are EGRESS);
``side="server"``: the traced process is the server. ``mode`` changes how bytes are cut:
``"chunks"`` as recorded, ``"bytes"`` one byte per segment (split messages), ``"joined"`` all
consecutive chunks of one direction in one segment (many messages in one read).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from hostagent.capture.tracker import ConnectionTracker
from hostagent.model import Call, CaptureEvent, Direction, EventKind, Segment
from hostagent.protocols.base import StreamParser
from hostagent.protocols.registry import PROTOCOLS
from tests.support.tcp_recorder import load

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "db"


def chunks(name: str) -> list[tuple[str, bytes]]:
    return load(FIXTURES / f"{name}.json")


def segments(name: str, side: str = "client", mode: str = "chunks") -> list[Segment]:
    recorded = chunks(name)
    if mode == "joined":
        merged: list[tuple[str, bytes]] = []
        for who, data in recorded:
            if merged and merged[-1][0] == who:
                merged[-1] = (who, merged[-1][1] + data)
            else:
                merged.append((who, data))
        recorded = merged
    out: list[Segment] = []
    ts = 0
    for who, data in recorded:
        ts += 1000
        mine = (who == "c") == (side == "client")
        direction = Direction.EGRESS if mine else Direction.INGRESS
        if mode == "bytes":
            for i in range(len(data)):
                out.append(Segment(direction, data[i : i + 1], 1, ts))
        else:
            out.append(Segment(direction, data, len(data), ts))
    return out


def run(parser: StreamParser, segs: list[Segment]) -> list[Call]:
    calls: list[Call] = []
    for seg in segs:
        calls.extend(parser.feed(seg))
    calls.extend(parser.close(10**12))
    return calls


def summary(call: Call) -> tuple[object, ...]:
    """What a test compares: span name, the attributes, the error type."""
    return (call.name, tuple(sorted(call.attributes.items())), call.error_type)


def cut_at(segs: list[Segment], draw_points: Callable[[Segment], list[int]]) -> list[Segment]:
    """The same bytes split again at the points ``draw_points(segment)`` gives (each inside
    that segment's data), every piece keeping its segment's direction and timestamp."""
    cut: list[Segment] = []
    for seg in segs:
        prev = 0
        for p in [*sorted(draw_points(seg)), len(seg.data)]:
            if p > prev:
                cut.append(Segment(seg.direction, seg.data[prev:p], p - prev, seg.ts_ns))
                prev = p
    return cut


def tracked(name: str, first: int, side: str = "client", tracker: Optional[ConnectionTracker] = None) -> list[Call]:
    """The recording from chunk ``first`` on, through the capture stage (``tracker``; by default
    one with every protocol enabled): detection included, as for a socket whose first bytes the
    agent sees there (opened before it started, or a connection's first command). Pid 4242, fd 7."""
    if tracker is None:
        tracker = ConnectionTracker(lambda: PROTOCOLS)
    calls: list[Call] = []
    for i, (who, data) in enumerate(chunks(name)[first:]):
        mine = (who == "c") == (side == "client")
        event = CaptureEvent(kind=EventKind.DATA, ts_ns=1000 * (i + 1), pid=4242, tid=4242, fd=7, cgroup_id=1,
                             direction=Direction.EGRESS if mine else Direction.INGRESS, data=data, size=len(data),
                             sock_type=socket.SOCK_STREAM, family=socket.AF_INET)  # fmt: skip
        calls += tracker.handle(event)
    return calls
