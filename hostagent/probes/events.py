"""The Python mirror of bpf/events.h and the hot-path decoder of ring-buffer records.

``EventHdr`` (ctypes) is the one Python definition of ``struct event_hdr``; the struct-module
format used for decoding is derived from it at import, so the two cannot drift apart. A root
test compiles events.h with bcc and checks this mirror's size and offsets against it.

``decode_at`` runs once per event (hundreds of thousands per second) on the ring's own mapping:
one ``struct.unpack_from``, one dict lookup for everything that repeats per connection
(endpoints, comm; bounded memo) and one slice for the payload.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Any, Optional, Union

from hostagent.model import CaptureEvent, Direction, EventKind

c = ctypes


class EventHdr(c.Structure):
    """struct event_hdr (bpf/events.h)."""

    _fields_ = (
        ("ts_ns", c.c_uint64),
        ("cgroup_id", c.c_uint64),
        ("size", c.c_uint64),
        ("pid", c.c_uint32),
        ("tid", c.c_uint32),
        ("fd", c.c_int32),
        ("captured_len", c.c_uint32),
        ("kind", c.c_uint8),
        ("direction", c.c_uint8),
        ("syscall", c.c_uint8),
        ("flags", c.c_uint8),
        ("family", c.c_uint16),
        ("sock_type", c.c_uint16),
        ("peer_port", c.c_uint16),
        ("lost", c.c_uint16),
        ("peer_addr", c.c_uint8 * 16),
        ("comm", c.c_char * 16),
        ("local_port", c.c_uint16),
        ("_pad1", c.c_uint16),
        ("local_addr", c.c_uint8 * 16),
    )


class SockInfo(c.Structure):
    """struct sock_info (bpf/events.h): value of the ``sockets`` map."""

    _fields_ = (
        ("gen", c.c_uint64),
        ("ts", c.c_uint64),
        ("family", c.c_uint16),
        ("sock_type", c.c_uint16),
        ("peer_port", c.c_uint16),
        ("local_port", c.c_uint16),
        ("peer_addr", c.c_uint8 * 16),
        ("local_addr", c.c_uint8 * 16),
        ("id_fd", c.c_uint32),
        ("lost", c.c_uint32),
    )


RECENT_FDS = 4
NO_FD = 0xFFFFFFFF


class RecentFds(c.Structure):
    """struct recent_fds (bpf/events.h): value of the ``recent`` map (tgid -> last socket fds)."""

    _fields_ = (
        ("fd", c.c_uint32 * RECENT_FDS),
        ("next", c.c_uint32),
        ("_pad0", c.c_uint32),
    )


# enum syscall_op, enum drop_cause (bpf/events.h)
SYSCALL_OPS = (
    "none", "read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
    "recvmmsg", "sendmmsg", "sendfile", "socket", "connect", "accept", "close", "bind", "dup",
)  # fmt: skip
DROP_CAUSES = ("ringbuf_full", "inflight_full", "read_fault", "mmsg_truncated")
CONF_SOCKET_ENABLED = 0
EVF_READ_FAULT = 1
EVF_PEER_FROM_CALL = 2

_CODES = {
    c.c_uint64: "Q", c.c_uint32: "I", c.c_int32: "i", c.c_uint16: "H", c.c_uint8: "B",
}  # fmt: skip


def _struct_format(cls: type[c.Structure], start: str = "", end: str = "", skip: tuple[str, ...] = ()) -> str:
    """A struct-module format equal to the ctypes layout (explicit pad bytes, little endian), for
    the fields from ``start`` up to (not including) ``end``; ``skip``ped fields become pad bytes."""
    fields = [f[:2] for f in cls._fields_]
    names = [n for n, _ in fields]
    lo = names.index(start) if start else 0
    hi = names.index(end) if end else len(names)
    pos = getattr(cls, names[lo]).offset
    stop = getattr(cls, names[hi]).offset if end else c.sizeof(cls)
    fmt = "<"
    for name, ctype in fields[lo:hi]:
        off = getattr(cls, name).offset
        fmt += "x" * (off - pos)
        size = c.sizeof(ctype)
        fmt += "x" * size if name in skip else _CODES[ctype] if ctype in _CODES else f"{size}s"
        pos = off + size
    return fmt + "x" * (stop - pos)


HDR_FORMAT = _struct_format(EventHdr)
HDR_SIZE = c.sizeof(EventHdr)
assert struct.calcsize(HDR_FORMAT) == HDR_SIZE == 104

# The hot path unpacks the fixed fields one by one but takes everything from ``family`` to the end
# (family, sock_type, both endpoints, comm) as one bytes object: per connection it hardly ever
# changes, so one dict lookup turns it into the seven decoded fields (see _tail).
_TAIL_AT = EventHdr.family.offset
_HEAD_FORMAT = _struct_format(EventHdr, end="family", skip=("syscall", "flags")) + f"{HDR_SIZE - _TAIL_AT}s"
_head = struct.Struct(_HEAD_FORMAT).unpack_from
_tail_fields = struct.Struct(_struct_format(EventHdr, start="family", skip=("_pad1",))).unpack
assert _HEAD_FORMAT == "<QQQIIiIBBxx60s" and struct.calcsize(_HEAD_FORMAT) == HDR_SIZE
_string_at = c.string_at
_new = object.__new__
_init = CaptureEvent.__init__

# Indexed by the raw byte (a tuple index is cheaper than a dict lookup); 0 and past the end are
# not kinds: 0 gives None, which decode_at turns into an error, as an index past the end is.
_KINDS: tuple[Optional[EventKind], ...] = tuple(
    EventKind(i) if i in EventKind._value2member_map_ else None for i in range(max(EventKind) + 1)
)
_DIRS: tuple[Direction, ...] = tuple(Direction(i) for i in range(len(Direction)))
assert [d.value for d in _DIRS] == sorted(d.value for d in Direction)
_comm_cache: dict[bytes, str] = {}
_peer_cache: dict[tuple[int, bytes], str] = {}
_tail_cache: dict[bytes, tuple[Any, ...]] = {}
_CACHE_MAX = 4096
_V4_MAPPED = b"\0" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d, an IPv4 peer of an AF_INET6 socket


def _comm(raw: bytes) -> str:
    s = _comm_cache.get(raw)
    if s is None:
        if len(_comm_cache) >= _CACHE_MAX:
            _comm_cache.clear()
        s = _comm_cache[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return s


def peer_str(family: int, raw: bytes) -> str:
    """The printable address of a 16-byte peer_addr ("" when family is not inet). An IPv4-mapped
    IPv6 address (an AF_INET6 socket talking to an IPv4 client) is given as the IPv4 address,
    as OpenTelemetry's network.peer.address expects: ``::ffff:127.0.0.1`` -> ``127.0.0.1``."""
    s = _peer_cache.get((family, raw))
    return s if s is not None else _peer(family, raw)


def _peer(family: int, raw: bytes) -> str:
    key = (family, raw)
    s = _peer_cache.get(key)
    if s is None:
        if family == socket.AF_INET:
            s = socket.inet_ntop(socket.AF_INET, raw[:4])
        elif family == socket.AF_INET6:
            if raw[:12] == _V4_MAPPED:
                s = socket.inet_ntop(socket.AF_INET, raw[12:16])
            else:
                s = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            return ""
        if len(_peer_cache) >= _CACHE_MAX:
            _peer_cache.clear()
        _peer_cache[key] = s
    return s


def _tail(raw: bytes) -> tuple[Any, ...]:
    """header bytes from ``family`` to the end -> (family, peer_addr, peer_port, sock_type, comm,
    local_addr, local_port, lost), in CaptureEvent's order; memoised (bounded) by the raw bytes
    (``lost`` changes only after the kernel lost calls of the socket: a new entry then)."""
    fam, stype, port, lost, addr, comm, lport, laddr = _tail_fields(raw)
    out = (
        fam,
        _peer(fam, addr) if fam else "",
        port,
        stype,
        _comm(comm),
        _peer(fam, laddr) if lport and fam else "",
        lport,
        lost,
    )
    if len(_tail_cache) >= _CACHE_MAX:
        _tail_cache.clear()
    _tail_cache[raw] = out
    return out


def decode_at(buf: Any, off: int, length: int) -> CaptureEvent:
    """The record of ``length`` bytes at ``off`` in ``buf`` -> CaptureEvent, read in place.

    ``buf`` is anything ``struct`` reads whose slices are ``bytes``: the ring's mmap (the
    loader's hot path), or a record's own bytes. Only the payload is copied out."""
    ts, cg, moved, pid, tid, fd, clen, kind, direction, tail = _head(buf, off)
    t = _tail_cache.get(tail)
    if t is None:
        t = _tail(tail)
    if clen:
        if clen > length - HDR_SIZE:  # never past the record, whatever the header says
            clen = length - HDR_SIZE
        start = off + HDR_SIZE
        data = buf[start : start + clen]
    else:
        data = b""
    # Positional: ~2x cheaper than keywords; test_kernel_events pins CaptureEvent's field order.
    # __new__ then __init__ skips type.__call__'s generic path (~10%); __init__ still runs whole.
    e = _new(CaptureEvent)
    _init(e, _KINDS[kind] or _not_a_kind(kind), ts, pid, tid, fd, cg, _DIRS[direction], moved, data,
          t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])  # fmt: skip
    return e


def _not_a_kind(kind: int) -> EventKind:
    raise ValueError(f"not an event kind: {kind}")


def decode(raw: Union[int, bytes], size: int) -> CaptureEvent:
    """One ring-buffer record -> CaptureEvent. ``raw`` is the record's address (a ctypes buffer,
    as bench/capacity.py replays recordings) or its bytes; ``size`` is the record's length
    (header + payload). The loader reads the ring in place with ``decode_at``."""
    rec = _string_at(raw, size) if isinstance(raw, int) else raw
    return decode_at(rec, 0, size)


def header(raw: Union[int, bytes]) -> EventHdr:
    """The full header, including fields CaptureEvent leaves out (syscall, flags); for tests."""
    buf = c.string_at(raw, HDR_SIZE) if isinstance(raw, int) else bytes(raw[:HDR_SIZE])
    return EventHdr.from_buffer_copy(buf)
