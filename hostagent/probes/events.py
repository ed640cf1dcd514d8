"""The Python mirror of bpf/events.h and the hot-path decoder of ring-buffer records.

``EventHdr`` (ctypes) is the one Python definition of ``struct event_hdr``; the struct-module
format used for decoding is derived from it at import, so the two cannot drift apart. A root
test compiles events.h with bcc and checks this mirror's size and offsets against it.

``decode`` runs once per event (hundreds of thousands per second), so it does one
``ctypes.string_at`` for the record, one ``struct.unpack_from`` and one slice for the payload,
and caches the few things that repeat (comm strings, peer addresses, enum members).
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
        ("_pad0", c.c_uint16),
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
        ("_pad0", c.c_uint32),
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


def _struct_format(cls: type[c.Structure]) -> str:
    """A struct-module format equal to the ctypes layout (explicit pad bytes, little endian)."""
    fmt, pos = "<", 0
    for name, ctype, *_ in cls._fields_:
        off = getattr(cls, name).offset
        fmt += "x" * (off - pos)
        fmt += _CODES[ctype] if ctype in _CODES else f"{c.sizeof(ctype)}s"
        pos = off + c.sizeof(ctype)
    return fmt + "x" * (c.sizeof(cls) - pos)


HDR_FORMAT = _struct_format(EventHdr)
HDR_SIZE = c.sizeof(EventHdr)
_unpack = struct.Struct(HDR_FORMAT).unpack_from
_string_at = c.string_at
assert struct.calcsize(HDR_FORMAT) == HDR_SIZE == 104

_KINDS = {k.value: k for k in EventKind}
_DIRS = {d.value: d for d in Direction}
_comm_cache: dict[bytes, str] = {}
_peer_cache: dict[tuple[int, bytes], str] = {}
_CACHE_MAX = 4096


def _comm(raw: bytes) -> str:
    s = _comm_cache.get(raw)
    if s is None:
        if len(_comm_cache) >= _CACHE_MAX:
            _comm_cache.clear()
        s = _comm_cache[raw] = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return s


def peer_str(family: int, raw: bytes) -> str:
    """The printable address of a 16-byte peer_addr ("" when family is not inet)."""
    s = _peer_cache.get((family, raw))
    return s if s is not None else _peer(family, raw)


def _peer(family: int, raw: bytes) -> str:
    key = (family, raw)
    s = _peer_cache.get(key)
    if s is None:
        if family == socket.AF_INET:
            s = socket.inet_ntop(socket.AF_INET, raw[:4])
        elif family == socket.AF_INET6:
            s = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            return ""
        if len(_peer_cache) >= _CACHE_MAX:
            _peer_cache.clear()
        _peer_cache[key] = s
    return s


def decode(raw: Union[int, bytes], size: int) -> CaptureEvent:
    """One ring-buffer record -> CaptureEvent. ``raw`` is the record's address (as bcc's
    callback passes it) or its bytes; ``size`` is the record's length (header + payload).
    The loader uses RingDecoder, which avoids the copy; this is the general form."""
    rec = _string_at(raw, size) if isinstance(raw, int) else raw
    fields = _unpack(rec)
    clen = fields[6]
    return _event(fields, rec[HDR_SIZE : HDR_SIZE + clen] if clen else b"")


def _event(fields: tuple[Any, ...], data: bytes) -> CaptureEvent:
    (ts, cg, moved, pid, tid, fd, _clen, kind, direction, _op, _fl, fam, stype, port, _p0,
     addr, comm, lport, _p1, laddr) = fields  # fmt: skip
    name = _comm_cache.get(comm)
    peer = _peer_cache.get((fam, addr), "") if fam else ""
    # Positional: ~2x cheaper than keywords; test_kernel_events pins CaptureEvent's field order.
    return CaptureEvent(
        _KINDS[kind],
        ts,
        pid,
        tid,
        fd,
        cg,
        _DIRS[direction],
        moved,
        data,
        fam,
        peer or (_peer(fam, addr) if fam else ""),
        port,
        stype,
        name if name is not None else _comm(comm),
        _peer(fam, laddr) if lport and fam else "",
        lport,
    )


class RingDecoder:
    """decode() for records that live in one mmapped ring buffer, without copying the header.

    libbpf maps a ring's data area twice back to back, so a record is always contiguous. On the
    first record we find its mapping in /proc/self/maps and keep a memoryview over it; then
    each header is unpacked in place and only the payload is copied out. Records outside the
    known mapping (another ring) fall back to ``decode``. The view must not outlive the ring:
    the loader drops it before freeing the ring.
    """

    def __init__(self, maps: str = "/proc/self/maps", name: str = "anon_inode:bpf-map") -> None:
        self._maps = maps
        self._name = name  # only mappings with this path: a ring's, never the heap
        self._lo = 0
        self._hi = 0
        self._view: Optional[memoryview] = None

    def __call__(self, addr: int, size: int) -> CaptureEvent:
        off = addr - self._lo
        if off < 0 or addr + size > self._hi:
            if not self._find(addr):
                return decode(addr, size)
            off = addr - self._lo
        view = self._view
        assert view is not None
        fields = _unpack(view, off)
        clen = fields[6]
        start = off + HDR_SIZE
        return _event(fields, bytes(view[start : start + clen]) if clen else b"")

    def _find(self, addr: int) -> bool:
        with open(self._maps) as f:
            for line in f:
                cols = line.split(maxsplit=5)
                lo_s, _, hi_s = cols[0].partition("-")
                lo, hi = int(lo_s, 16), int(hi_s, 16)
                path = cols[5].strip() if len(cols) > 5 else ""
                if lo <= addr < hi and path == self._name:
                    self._lo, self._hi = lo, hi
                    self._view = memoryview((c.c_char * (hi - lo)).from_address(lo)).cast("B")
                    return True
        return False

    def release(self) -> None:
        if self._view is not None:
            self._view.release()
        self._view, self._lo, self._hi = None, 0, 0


def header(raw: Union[int, bytes]) -> EventHdr:
    """The full header, including fields CaptureEvent leaves out (syscall, flags); for tests."""
    buf = c.string_at(raw, HDR_SIZE) if isinstance(raw, int) else bytes(raw[:HDR_SIZE])
    return EventHdr.from_buffer_copy(buf)
