"""Per-connection state kept by the ConnectionTracker (one object per (pid, fd))."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Final, Optional

from hostagent.model import Call, Connection, Endpoint, Segment
from hostagent.protocols.base import ProtocolSpec, StreamParser
from hostagent.protocols.http1 import Http1Parser

# Detection gives up after this many segments or bytes without a protocol match.
DETECT_SEGMENTS: Final = 3
DETECT_BYTES: Final = 4096
# A stream first seen mid-way (open before the agent started, or inherited: its first event is
# data, not connect/accept) may show the rest of a message in flight first - a 4 MB Redis reply
# is ~64 reads - so detection tries each segment on its own for this many before giving up.
DETECT_SEGMENTS_MIDWAY: Final = 256
# A stream judged unknown after calls of it were lost while it was being detected (the kernel shed
# them: a full ring) was judged on what the losses left, maybe never a message's start (a Redis
# client's small commands shed after each burst of a big reply's pieces): it is detected again,
# unmuted, this long after it was given up on, each time UNKNOWN_RETRY_FACTOR times longer, at most
# UNKNOWN_RETRIES times. One that lost nothing was seen whole and stays muted.
UNKNOWN_RETRY_NS: Final = 1_000_000_000
UNKNOWN_RETRY_FACTOR: Final = 4
UNKNOWN_RETRIES: Final = 3
TID_HISTORY: Final = 8  # thread changes remembered per direction (request -> handling thread)

# UNKNOWN: no enabled protocol recognised the first bytes; MUTED: left the protocol (101 upgrade);
# OFF: its protocol's probe was turned off (taken up again when it is back on). All three above
# PARSING are muted in the kernel. Final literals: compiled, the hot paths compare with constants
# instead of looking the names up in the module's dict (so are the other modules' Final ones).
DETECTING: Final = 0
PARSING: Final = 1
UNKNOWN: Final = 2
MUTED: Final = 3
OFF: Final = 4


# No protocol judged yet: one shared empty set (immutable), not a new one per connection.
NOTHING_JUDGED: Final[frozenset[str]] = frozenset()

_AF_UNIX: Final = int(socket.AF_UNIX)
_SOCK_DGRAM: Final = int(socket.SOCK_DGRAM)


def transport_of(family: int, sock_type: int) -> str:
    # module constants: compiled, ``socket.AF_UNIX`` would be an attribute lookup per connection
    if family == _AF_UNIX:
        return "unix"
    return "udp" if sock_type == _SOCK_DGRAM else "tcp"


class ConnState:
    """What the tracker knows about one socket. Mutable; lives only inside the tracker."""

    __slots__ = (
        "cgroup_id",
        "comm",
        "conn",
        "fd",
        "feed_bytes",
        "held",
        "http1",
        "judged",
        "local",
        "lost",
        "lost_at_detect",
        "midway",
        "parser",
        "peer",
        "phase",
        "pid",
        "retries",
        "seen_bytes",
        "seen_segments",
        "spec",
        "tids",
        "transport",
    )  # fmt: skip

    def __init__(
        self,
        pid: int,
        fd: int,
        cgroup_id: int,
        transport: str,
        peer: Optional[Endpoint],
        comm: str,
        local: Optional[Endpoint] = None,
        lost: int = 0,
    ) -> None:
        self.pid = pid
        self.fd = fd
        self.cgroup_id = cgroup_id
        self.transport = transport
        self.peer = peer
        # The socket's own end; a non-blocking connect() learns it after its CONNECT event,
        # so the tracker fills it from the first event that carries it.
        self.local = local
        self.comm = comm
        self.lost = lost  # the kernel's count of this socket's uncaptured calls (CaptureEvent.lost)
        # ``lost`` when detection (re)started: a change by the time it gives up means it was
        # judged on an incomplete stream (see UNKNOWN_RETRY_NS)
        self.lost_at_detect = lost
        self.retries = 0  # times detection was taken up again after such a judgement
        self.phase = DETECTING
        self.midway = False  # a stream first seen by its data (see DETECT_SEGMENTS_MIDWAY)
        self.spec: Optional[ProtocolSpec] = None
        self.parser: Optional[StreamParser] = None
        # The parser's ``feed_bytes(direction, data, size, ts_ns)`` when it has one (stream sockets
        # only): ``feed`` without a Segment built per event.
        self.feed_bytes: Optional[Callable[[int, bytes, int, int], list[Call]]] = None
        # The parser again when it is HTTP/1 (most sockets): compiled, the tracker then calls it
        # natively, its ints unboxed, instead of through the bound method (a third of a data
        # event's cost in the tracker, fifth round (continued) in bench/README.md).
        self.http1: Optional[Http1Parser] = None
        self.seen_segments = 0
        self.seen_bytes = 0
        # Stream segments seen while DETECTING (at most DETECT_SEGMENTS): a client that reads a
        # 4-byte MySQL packet header before its body only shows a greeting over two reads, and
        # the parser chosen then needs both.
        self.held: list[Segment] = []
        # UNKNOWN: the names of the protocols enabled when detection gave up; one enabled later
        # was never tried on this socket.
        self.judged: frozenset[str] = NOTHING_JUDGED
        # Per direction (index = Direction): [(ts_ns, tid), ...] each time the thread changed.
        self.tids: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        self.conn: Optional[Connection] = None  # last Connection built (reused while tid/peer hold)

    def restart_detection(self) -> None:
        """Detect again from the next bytes; what was held or counted before is forgotten. The
        bytes may resume mid-message (a probe turned back on): as for a stream first seen mid-way."""
        self.phase = DETECTING
        self.midway = self.transport != "udp"
        self.held = []
        self.seen_segments = 0
        self.seen_bytes = 0
        self.judged = NOTHING_JUDGED
        self.lost_at_detect = self.lost

    def note_tid(self, direction: int, ts_ns: int, tid: int) -> None:
        """Remember which thread moved bytes from ``ts_ns`` on (only changes are stored)."""
        history = self.tids[direction]
        if not history or history[-1][1] != tid:
            history.append((ts_ns, tid))
            if len(history) > TID_HISTORY:
                del history[0]

    def tid_at(self, direction: int, ts_ns: int) -> int:
        """The thread that moved bytes in ``direction`` at ``ts_ns`` (a request's first segment)."""
        history = self.tids[direction]
        for when, tid in reversed(history):
            if when <= ts_ns:
                return tid
        if history:
            return history[0][1]
        other = self.tids[1 - direction]
        return other[-1][1] if other else self.pid

    def connection(self, tid: int, peer: Optional[Endpoint]) -> Connection:
        conn = self.conn
        if (
            conn is None or conn.tid != tid or (conn.peer is not peer and conn.peer != peer)
            or conn.local is not self.local
        ):  # fmt: skip
            conn = Connection(self.pid, tid, self.fd, self.cgroup_id, self.local, peer, self.transport, self.comm)
            self.conn = conn
        return conn
