"""The hot-path decoder of ring-buffer records: bytes of one ``struct event_hdr`` (+ payload) ->
``CaptureEvent``. Compiled with mypyc (setup.py), with ``CaptureEvent`` a native class of the
compiled ``hostagent.model``: per event one ``struct.unpack_from``, one dict lookup for what
repeats per connection (endpoints, comm; a bounded memo) and one slice for the payload.

The formats here are spelled out for the compiler; ``hostagent.probes.events`` derives the same
from its ctypes mirror of bpf/events.h at import and asserts that the two agree, so the mirror
stays the one definition.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Final, Optional

from hostagent.model import DIRECTIONS, CaptureEvent, EventKind

HDR_SIZE: Final = 104
# ts_ns cgroup_id size pid tid fd captured_len kind direction (syscall, flags skipped), then
# everything from ``family`` to the end as one bytes object: per connection it hardly changes,
# so one dict lookup turns it into the seven decoded fields (_tail).
HEAD_FORMAT: Final = "<QQQIIiIBBxx60s"
# family sock_type peer_port lost peer_addr comm local_port (_pad1) local_addr
TAIL_FORMAT: Final = "<HHHH16s16sHxx16s"
# tail_len (u16, little endian): the last bytes of the payload that are the call's own tail,
# read only for a call not captured whole (it is in the memo's key bytes, skipped by its format).
TAIL_LEN_AT: Final = 86
TAIL_IS_FRAMES: Final = 0x8000  # tail_len's flag: the payload ends with an HTTP/2 frame block
CACHE_MAX: Final = 4096

# Final: compiled, a C static each, not a lookup in the module's dict per call.
_head: Final = struct.Struct(HEAD_FORMAT).unpack_from
_tail_fields: Final = struct.Struct(TAIL_FORMAT).unpack
_TLEN: Final = TAIL_LEN_AT - (HDR_SIZE - 60)  # tail_len's offset in the head's last field (60s)
_AF_INET: Final = int(socket.AF_INET)
_AF_INET6: Final = int(socket.AF_INET6)
_V4_MAPPED: Final = b"\0" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d, an IPv4 peer of an AF_INET6 socket
_NO_ADDR: Final = bytes(16)


class Tail:
    """The decoded fields from ``family`` to the end of a header (memoised by its bytes)."""

    __slots__ = ("comm", "family", "local_addr", "local_port", "lost", "peer_addr", "peer_port", "sock_type")

    def __init__(self, family: int, peer_addr: str, peer_port: int, sock_type: int, comm: str,
                 local_addr: str, local_port: int, lost: int) -> None:
        self.family = family
        self.peer_addr = peer_addr
        self.peer_port = peer_port
        self.sock_type = sock_type
        self.comm = comm
        self.local_addr = local_addr
        self.local_port = local_port
        self.lost = lost


# Indexed by the raw byte (a tuple index is cheaper than a dict lookup); 0 and past the end are
# not kinds: 0 gives None, which decode_at turns into an error, as an index past the end is.
_KINDS: Final[tuple[Optional[EventKind], ...]] = tuple(
    EventKind(i) if i in EventKind._value2member_map_ else None for i in range(max(EventKind) + 1)
)
# Final (cleared in place, never rebound): compiled, a C static each.
comm_cache: Final[dict[bytes, str]] = {}
peer_cache: Final[dict[tuple[int, bytes], str]] = {}
tail_cache: Final[dict[bytes, Tail]] = {}


def _comm(raw: bytes) -> str:
    s = comm_cache.get(raw)
    if s is None:
        if len(comm_cache) >= CACHE_MAX:
            comm_cache.clear()
        s = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        comm_cache[raw] = s
    return s


def peer_str(family: int, raw: bytes) -> str:
    """The printable address of a 16-byte peer_addr ("" when family is not inet). An IPv4-mapped
    IPv6 address (an AF_INET6 socket talking to an IPv4 client) is given as the IPv4 address,
    as OpenTelemetry's network.peer.address expects: ``::ffff:127.0.0.1`` -> ``127.0.0.1``."""
    key = (family, raw)
    s = peer_cache.get(key)
    if s is None:
        if family == _AF_INET:
            s = socket.inet_ntop(_AF_INET, raw[:4])
        elif family == _AF_INET6:
            if raw[:12] == _V4_MAPPED:
                s = socket.inet_ntop(_AF_INET, raw[12:16])
            else:
                s = socket.inet_ntop(_AF_INET6, raw)
        else:
            return ""
        if len(peer_cache) >= CACHE_MAX:
            peer_cache.clear()
        peer_cache[key] = s
    return s


def _tail(raw: bytes) -> Tail:
    """Header bytes from ``family`` to the end, decoded and memoised (bounded) by the raw bytes
    (``lost`` changes only after the kernel lost calls of the socket: a new entry then)."""
    fam, stype, port, lost, addr, comm, lport, laddr = _tail_fields(raw)
    out = Tail(
        fam,
        # a true IPv6 peer of a socket adopted mid-way comes with its port only (bpf/capture.c:
        # adopt): unknown, never "::"
        peer_str(fam, addr) if fam and not (fam == _AF_INET6 and addr == _NO_ADDR) else "",
        port,
        stype,
        _comm(comm),
        peer_str(fam, laddr) if lport and fam else "",
        lport,
        lost,
    )
    if len(tail_cache) >= CACHE_MAX:
        tail_cache.clear()
    tail_cache[raw] = out
    return out


def decode_at(buf: Any, off: int, length: int) -> CaptureEvent:
    """The record of ``length`` bytes at ``off`` in ``buf`` -> CaptureEvent, read in place.

    ``buf`` is anything ``struct`` reads whose slices are ``bytes``: the ring's mmap (the
    loader's hot path), or a record's own bytes. Only the payload is copied out.

    The header's fields are typed (``int``, ``bytes``) as they come out of the unpack: compiled,
    the sums, tests and tuple indexes below are then native, not generic object operations."""
    ts: int
    cg: int
    moved: int
    pid: int
    tid: int
    fd: int
    clen: int
    kind: int
    direction: int
    rest: bytes
    ts, cg, moved, pid, tid, fd, clen, kind, direction, rest = _head(buf, off)
    t = tail_cache.get(rest)
    if t is None:
        t = _tail(rest)
    data: bytes
    tail: bytes = b""
    frames: bytes = b""
    if clen:
        if clen > length - HDR_SIZE:  # never past the record, whatever the header says
            clen = length - HDR_SIZE
        start = off + HDR_SIZE
        # Not whole: its last bytes may follow the head (bpf/events.h). A frame block whatever
        # the sizes: one with many small frames past the head can be longer than the bytes past
        # it, the record then longer than the call; read as payload, a block broke that
        # connection's frames (a call of up to TAIL_BYTES past the head is sent whole, no block).
        # tail_len from the header bytes already unpacked (``rest`` starts at family).
        tlen = rest[_TLEN] | rest[_TLEN + 1] << 8
        block = tlen & TAIL_IS_FRAMES
        tlen &= TAIL_IS_FRAMES - 1
        if not block and moved <= clen:
            tlen = 0  # whole: the kernel sends no tail then
        if 0 < tlen <= clen:
            cut = start + clen - tlen
            data = buf[start:cut]
            if block:
                frames = buf[cut : start + clen]
            else:
                tail = buf[cut : start + clen]
        else:
            data = buf[start : start + clen]
    else:
        data = b""
    k = _KINDS[kind] if kind < len(_KINDS) else None
    if k is None:
        raise ValueError(f"not an event kind: {kind}")
    # Positional, in CaptureEvent's field order (test_kernel_events pins it).
    return CaptureEvent(k, ts, pid, tid, fd, cg, DIRECTIONS[direction], moved, data,
                        t.family, t.peer_addr, t.peer_port, t.sock_type, t.comm, t.local_addr, t.local_port,
                        t.lost, tail, frames)  # fmt: skip
