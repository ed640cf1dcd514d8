"""The Python mirror of bpf/events.h, and the entry points of the ring-buffer record decoder.

``EventHdr`` (ctypes) is the one Python definition of ``struct event_hdr``; the struct-module
formats of the decoder (hostagent.probes.decode, compiled: ctypes classes do not compile) are
checked against it at import, so the two cannot drift apart. A root test compiles events.h with
bcc and checks this mirror's size and offsets against it.

``decode_at`` runs once per event (hundreds of thousands per second) on the ring's own mapping.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Union

from hostagent.model import CaptureEvent
from hostagent.probes import decode as _decode

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
        ("tail_len", c.c_uint16),
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
        ("lost", c.c_uint16),
        ("named", c.c_uint8),
        ("h2", c.c_uint8),
        ("shed_seen", c.c_uint16),
        ("h2_lost", c.c_uint16),
        ("epoch_seen", c.c_uint32),
        ("h2_left", c.c_uint32 * 2),
    )


RECENT_FDS = 4
NO_FD = 0xFFFFFFFF
# SockInfo.gen of a closed socket's entry, kept in its slot for the fd number's next socket
# (bpf/capture.c: CLOSED_GEN): not a tracked socket.
CLOSED_GEN = 0xFFFFFFFFFFFFFFFF


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
DROP_CAUSES = ("ringbuf_full", "inflight_full", "read_fault", "mmsg_truncated", "h2_unwalked")
CONF_SOCKET_ENABLED = 0
CONF_DGRAM_EXIT = 1  # odd while the socket path's datagram exits are attached
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

# The decoder itself is hostagent.probes.decode (compiled): its formats must be this mirror's.
_TAIL_AT = EventHdr.family.offset
assert _decode.HDR_SIZE == HDR_SIZE
assert _decode.HEAD_FORMAT == (
    _struct_format(EventHdr, end="family", skip=("syscall", "flags")) + f"{HDR_SIZE - _TAIL_AT}s"
)
assert _decode.TAIL_FORMAT == _struct_format(EventHdr, start="family", skip=("tail_len",))
assert _decode.TAIL_LEN_AT == EventHdr.tail_len.offset
decode_at = _decode.decode_at
peer_str = _decode.peer_str
_string_at = c.string_at


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
