"""The records that flow through the pipeline.

Two shapes only:
- ``CaptureEvent``: one event decoded from the kernel's ring buffer (probes -> capture).
- ``Call``: one captured call (request + response), the record every protocol parser returns and
  every later stage (identity, traces, metrics, export) reads. Parsers fill the protocol part;
  the capture stage adds the connection (``conn``) and identity adds the service, each with
  ``dataclasses.replace`` so a Call is never mutated after it is handed on.

Timestamps inside the pipeline are kernel CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns);
hostagent.traces converts them to Unix nanoseconds once, at span creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from types import FunctionType
from typing import Any, Final, Optional, Union

AttributeValue = Union[str, bool, int, float, tuple[str, ...], tuple[int, ...]]
Attributes = dict[str, AttributeValue]


class EventKind(IntEnum):
    """Mirrors ``enum event_kind`` in bpf/events.h."""

    DATA = 1  # bytes moved by a read/write family syscall on a socket
    CONNECT = 2  # connect() on a socket (client side); peer from the sockaddr argument
    ACCEPT = 3  # accept()/accept4() returned a new socket (server side)
    CLOSE = 4  # close() of a tracked socket
    EXEC = 5  # sched_process_exec: data = the file name, size = the parent's tgid (0: unknown)
    EXIT = 6  # sched_process_exit (thread group leader)
    FORK = 7  # a process with sockets forked: pid = child (a thread's tid too), size = parent tgid
    CGROUP = 8  # cgroup_mkdir (unified hierarchy): size = the cgroup's id, data = its path
    LISTEN = 9  # a TCP socket entered LISTEN: pid = the listener, local_addr/local_port = where


class Direction(IntEnum):
    """Which way bytes moved, seen from the traced process. Mirrors bpf/events.h."""

    EGRESS = 0  # the process wrote/sent them
    INGRESS = 1  # the process read/received them


# Direction by value, for the hot paths: a tuple index, where Direction(value) runs the enum's
# lookup in Python.
DIRECTIONS: Final[tuple[Direction, ...]] = tuple(Direction(i) for i in range(len(Direction)))
assert [d.value for d in DIRECTIONS] == sorted(d.value for d in Direction)

def _probe() -> None:
    """Only looked at: compiled (mypyc), a module's functions are built-in functions."""


# The frozen records below write out their __init__: compiled, ``self.field = value`` is a C
# store into the instance (the frozen ``__setattr__`` dataclasses adds is not called by native
# code), ~3x faster than the generated __init__'s setattr calls. Run from the source, that store
# would raise FrozenInstanceError, so there each field goes through ``object.__setattr__`` as the
# generated __init__ does (``_init_fields``).
COMPILED: Final = not isinstance(_probe, FunctionType)
_set = object.__setattr__


def _init_fields(obj: object, names: tuple[str, ...], values: tuple[Any, ...]) -> None:
    """Run from the source: set a frozen record's fields, as the dataclass's __init__ does."""
    for name, value in zip(names, values):
        _set(obj, name, value)


class Role(IntEnum):
    """Which side of a call the traced process is on."""

    UNKNOWN = 0
    CLIENT = 1  # it sent the request
    SERVER = 2  # it received the request


@dataclass(slots=True, init=False)
class CaptureEvent:
    """One decoded kernel event. ``data`` is a bounded prefix of the ``size`` bytes moved."""

    kind: EventKind
    ts_ns: int  # CLOCK_MONOTONIC ns
    pid: int  # tgid
    tid: int
    fd: int
    cgroup_id: int = 0
    direction: Direction = Direction.EGRESS
    size: int = 0  # bytes the syscall really moved (return value); may exceed len(data)
    data: bytes = b""
    # Peer address when the syscall named one (connect/accept/sendto/recvfrom/msg_name).
    family: int = 0  # socket.AF_INET / AF_INET6 / 0 when unknown
    peer_addr: str = ""
    peer_port: int = 0
    sock_type: int = 0  # socket.SOCK_STREAM / SOCK_DGRAM / 0 when unknown
    comm: str = ""
    # The socket's own end when the kernel side knows it (bind, accept, TCP handshake); same
    # family as the peer; "0.0.0.0"/"::" for a wildcard-bound listener's port only.
    local_addr: str = ""
    local_port: int = 0  # 0 when unknown
    # DATA: how many of this socket's data calls the kernel did not capture so far (shed under
    # load, or the ring refused them), mod 2**16. A change between two events of a connection
    # means calls are missing between them (the tracker tells the parser: Tracker.handle).
    lost: int = 0
    # DATA of a call larger than the kernel's head copy: its last bytes (they end at ``size``;
    # bpf/events.h), after a gap of size - len(data) - len(tail) uncaptured bytes. b"" if none.
    tail: bytes = b""
    # DATA of a call larger than the head on an HTTP/2 connection: instead of the tail, the frames
    # from the head's cut to the call's end (bpf/events.h: struct h2_block; http2_frames reads it).
    frames: bytes = b""

    # Written out (init=False): compiled (mypyc), an explicit __init__ is C, where the one
    # dataclasses generates is Python code setting each field through setattr (~3x slower).
    def __init__(self, kind: EventKind, ts_ns: int, pid: int, tid: int, fd: int, cgroup_id: int = 0,
                 direction: Direction = Direction.EGRESS, size: int = 0, data: bytes = b"", family: int = 0,
                 peer_addr: str = "", peer_port: int = 0, sock_type: int = 0, comm: str = "",
                 local_addr: str = "", local_port: int = 0, lost: int = 0, tail: bytes = b"",
                 frames: bytes = b"") -> None:
        self.kind = kind
        self.ts_ns = ts_ns
        self.pid = pid
        self.tid = tid
        self.fd = fd
        self.cgroup_id = cgroup_id
        self.direction = direction
        self.size = size
        self.data = data
        self.family = family
        self.peer_addr = peer_addr
        self.peer_port = peer_port
        self.sock_type = sock_type
        self.comm = comm
        self.local_addr = local_addr
        self.local_port = local_port
        self.lost = lost
        self.tail = tail
        self.frames = frames


@dataclass(slots=True, init=False)
class ParserStats:
    """Counters a protocol parser keeps (one per connection); the capture stage sums them for
    status and metrics. Here rather than in hostagent.protocols.base to be compiled."""

    resyncs: int = 0  # times garbage was skipped to find the next message
    unpaired: int = 0  # requests or responses without a counterpart
    truncated: int = 0  # messages whose head was not fully captured
    extra: dict[str, int] = field(default_factory=dict)

    def __init__(self, resyncs: int = 0, unpaired: int = 0, truncated: int = 0,
                 extra: Optional[dict[str, int]] = None) -> None:
        self.resyncs = resyncs
        self.unpaired = unpaired
        self.truncated = truncated
        self.extra = {} if extra is None else extra


@dataclass(frozen=True, slots=True, init=False)
class Segment:
    """Bytes of one direction handed to a protocol parser, in order for that connection.

    ``data`` is what the kernel copied; ``size`` is what really moved. When ``size > len(data)``
    the rest was not captured: parsers must count it (body sizes) but never invent its content.
    ``tail``, when not empty, is the segment's last bytes (from ``tail_at`` to ``size``), copied
    apart from the head: a parser that cannot use it treats it as lost like the bytes before it.
    """

    direction: Direction
    data: bytes
    size: int
    ts_ns: int
    peer_addr: str = ""  # datagram sockets: the peer named by this very syscall
    peer_port: int = 0
    tail: bytes = b""
    frames: bytes = b""  # an HTTP/2 frame block in place of the tail (CaptureEvent.frames)

    def __init__(self, direction: Direction, data: bytes, size: int, ts_ns: int, peer_addr: str = "",
                 peer_port: int = 0, tail: bytes = b"", frames: bytes = b"") -> None:
        if not COMPILED:
            _init_fields(self, _SEGMENT_FIELDS, (direction, data, size, ts_ns, peer_addr, peer_port, tail, frames))
            return
        self.direction = direction  # type: ignore[misc]  # frozen: see COMPILED
        self.data = data  # type: ignore[misc]
        self.size = size  # type: ignore[misc]
        self.ts_ns = ts_ns  # type: ignore[misc]
        self.peer_addr = peer_addr  # type: ignore[misc]
        self.peer_port = peer_port  # type: ignore[misc]
        self.tail = tail  # type: ignore[misc]
        self.frames = frames  # type: ignore[misc]

    @property
    def tail_at(self) -> int:
        """Offset of ``tail`` in the segment's bytes (``size`` when there is none)."""
        return self.size - len(self.tail)


@dataclass(frozen=True, slots=True, init=False)
class Endpoint:
    address: str
    port: int

    def __init__(self, address: str, port: int) -> None:
        if not COMPILED:
            _init_fields(self, _ENDPOINT_FIELDS, (address, port))
            return
        self.address = address  # type: ignore[misc]  # frozen: see COMPILED
        self.port = port  # type: ignore[misc]


@dataclass(frozen=True, slots=True, init=False)
class Connection:
    """The socket a Call travelled on, from the traced process's point of view."""

    pid: int
    tid: int  # thread that sent/received the request
    fd: int
    cgroup_id: int = 0
    local: Optional[Endpoint] = None
    peer: Optional[Endpoint] = None
    transport: str = "tcp"  # "tcp" | "udp" | "unix"
    comm: str = ""

    def __init__(self, pid: int, tid: int, fd: int, cgroup_id: int = 0, local: Optional[Endpoint] = None,
                 peer: Optional[Endpoint] = None, transport: str = "tcp", comm: str = "") -> None:
        if not COMPILED:
            _init_fields(self, _CONNECTION_FIELDS, (pid, tid, fd, cgroup_id, local, peer, transport, comm))
            return
        self.pid = pid  # type: ignore[misc]  # frozen: see COMPILED
        self.tid = tid  # type: ignore[misc]
        self.fd = fd  # type: ignore[misc]
        self.cgroup_id = cgroup_id  # type: ignore[misc]
        self.local = local  # type: ignore[misc]
        self.peer = peer  # type: ignore[misc]
        self.transport = transport  # type: ignore[misc]
        self.comm = comm  # type: ignore[misc]


@dataclass(frozen=True, slots=True, init=False)
class Call:
    """One request and its response (or the request alone when the response never came).

    Attributes carry the OpenTelemetry semantic-convention keys the protocol knows
    (``http.request.method``, ``db.system.name``...). Connection-derived attributes
    (server.address, network.peer.*) are added by hostagent.traces from ``conn``.
    """

    protocol: str  # "http", "http2", "grpc", "postgresql", "mysql", "redis", "dns"
    role: Role
    start_ns: int  # first byte of the request (monotonic ns)
    end_ns: int  # last byte of the response (monotonic ns)
    name: str  # span name per the conventions, e.g. "GET /users/{id}" or "SELECT orders"
    attributes: Attributes = field(default_factory=dict)
    error_type: Optional[str] = None  # set -> span status ERROR with this error.type
    status_message: str = ""
    traceparent: Optional[str] = None  # W3C traceparent found on the request, if any
    tracestate: Optional[str] = None
    # Wire detail (issue 9); captured prefixes only, redacted before export.
    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    request_body: bytes = b""
    response_body: bytes = b""
    request_size: int = 0  # body bytes really moved, captured or not
    response_size: int = 0
    conn: Optional[Connection] = None  # set by the capture stage
    service: Any = None  # hostagent.identity.Service, set by the identity stage
    # HTTP/2 stream id (0: not HTTP/2). Concurrent calls share one connection; the stream id is
    # what tells them apart, the same at both ends (hostagent.traces.linking).
    stream_id: int = 0

    def __init__(self, protocol: str, role: Role, start_ns: int, end_ns: int, name: str,
                 attributes: Optional[Attributes] = None, error_type: Optional[str] = None,
                 status_message: str = "", traceparent: Optional[str] = None, tracestate: Optional[str] = None,
                 request_headers: tuple[tuple[str, str], ...] = (), response_headers: tuple[tuple[str, str], ...] = (),
                 request_body: bytes = b"", response_body: bytes = b"", request_size: int = 0,
                 response_size: int = 0, conn: Optional[Connection] = None, service: Any = None,
                 stream_id: int = 0) -> None:
        if attributes is None:  # the field's default_factory: a dict of its own per Call
            attributes = {}
        if not COMPILED:
            _init_fields(self, _CALL_FIELDS, (
                protocol, role, start_ns, end_ns, name, attributes, error_type, status_message, traceparent,
                tracestate, request_headers, response_headers, request_body, response_body, request_size,
                response_size, conn, service, stream_id))  # fmt: skip
            return
        self.protocol = protocol  # type: ignore[misc]  # frozen: see COMPILED
        self.role = role  # type: ignore[misc]
        self.start_ns = start_ns  # type: ignore[misc]
        self.end_ns = end_ns  # type: ignore[misc]
        self.name = name  # type: ignore[misc]
        self.attributes = attributes  # type: ignore[misc]
        self.error_type = error_type  # type: ignore[misc]
        self.status_message = status_message  # type: ignore[misc]
        self.traceparent = traceparent  # type: ignore[misc]
        self.tracestate = tracestate  # type: ignore[misc]
        self.request_headers = request_headers  # type: ignore[misc]
        self.response_headers = response_headers  # type: ignore[misc]
        self.request_body = request_body  # type: ignore[misc]
        self.response_body = response_body  # type: ignore[misc]
        self.request_size = request_size  # type: ignore[misc]
        self.response_size = response_size  # type: ignore[misc]
        self.conn = conn  # type: ignore[misc]
        self.service = service  # type: ignore[misc]
        self.stream_id = stream_id  # type: ignore[misc]


def spend_wire(call: Call) -> None:
    """Empty ``call``'s raw headers and bodies in place (the pipeline's, once what capture keeps of
    them is in its attributes): a Call the caller owns, the one place a built Call's fields change.
    Compiled, four native writes; ``object.__setattr__`` through the frozen class cost ~0.1 us each."""
    if not COMPILED:
        _init_fields(call, _WIRE_FIELDS, ((), (), b"", b""))
        return
    call.request_headers = ()  # type: ignore[misc]  # frozen: see COMPILED
    call.response_headers = ()  # type: ignore[misc]
    call.request_body = b""  # type: ignore[misc]
    call.response_body = b""  # type: ignore[misc]


# Field names in declaration order, for _init_fields (a test holds each __init__ to them).
_SEGMENT_FIELDS: Final = ("direction", "data", "size", "ts_ns", "peer_addr", "peer_port", "tail", "frames")
_ENDPOINT_FIELDS: Final = ("address", "port")
_CONNECTION_FIELDS: Final = ("pid", "tid", "fd", "cgroup_id", "local", "peer", "transport", "comm")
_WIRE_FIELDS: Final = ("request_headers", "response_headers", "request_body", "response_body")
_CALL_FIELDS: Final = (
    "protocol", "role", "start_ns", "end_ns", "name", "attributes", "error_type", "status_message", "traceparent",
    "tracestate", "request_headers", "response_headers", "request_body", "response_body", "request_size",
    "response_size", "conn", "service", "stream_id")  # fmt: skip
