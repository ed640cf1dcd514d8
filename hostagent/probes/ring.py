"""The consumer side of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF), read directly from Python.

Why not libbpf's consumer (bcc's ``bpf_new_ringbuf``): it calls back into Python through a ctypes
trampoline once per record and stores the consumer position after every record. Here the records
are walked in a Python loop over the ring's own mapping, the caller decodes each one in place,
and the consumer position is stored once per batch.

The kernel's layout (kernel/bpf/ringbuf.c, the same mapping libbpf makes):

- offset 0 of the map fd: one page holding ``consumer_pos`` (u64), the only page the consumer
  may map read-write; writing it hands the space back to the producers.
- offset page_size: one page holding ``producer_pos`` (u64), then the data area mapped twice
  back to back (read-only), so a record that wraps past the end is contiguous in memory.
  libbpf maps both in one go; any read-only range of them can be mapped, so here the producer
  page and the (doubled) data area are two mappings and sample offsets index ``data`` directly.
- each record: an 8-byte header (u32 ``len`` with BUSY_BIT while the producer is still writing
  and DISCARD_BIT when it gave the space up; u32 page offset, kernel-internal), ``len`` sample
  bytes, padding to 8 bytes. Positions only grow; ``pos & (size - 1)`` is the offset in the area.

``consume`` is the pure part (any buffer laid out like the data area), ``RingReader`` maps a
real ring's fd and drains it in batches, ``Pacer`` is what a drain does between them. Compiled
(setup.py's COMPILED): live, the interpreted walk was ~13% of the poll thread at the "20k" level
(perf, 3-4 records per span). One consumer only: its position is kept in Python.
Memory order: a producer publishes a record by clearing BUSY_BIT with a release store; on x86
(TSO) plain loads see the record's bytes once they see the cleared bit. libbpf reads with
acquire loads for weaker CPUs (arm64); Python has none, which is an accepted gap there.
"""

from __future__ import annotations

import mmap
import select
import time
from collections.abc import Callable
from typing import Any, Final, Optional, TypeVar, cast

from hostagent.probes.decode import decode_at
from hostagent.probes.fdinfo import read_fdinfo
from hostagent.yielding import CpuYield

BUSY_BIT: Final = 1 << 31
DISCARD_BIT: Final = 1 << 30
LEN_MASK: Final = DISCARD_BIT - 1  # sample length without the flag bits
HDR_SZ: Final = 8  # struct bpf_ringbuf_hdr: u32 len, u32 pg_off

T = TypeVar("T")


def consume(
    lens: Any,
    buf: Any,
    mask: int,
    cons: int,
    prod: int,
    decode: Callable[[Any, int, int], T],
    deliver: Callable[[T], object],
    on_error: Callable[[], object],
) -> tuple[int, int]:
    """Decode and deliver every committed record between positions ``cons`` and ``prod``.

    ``lens`` is the data area as 32-bit words (``lens[off >> 2]`` is the header word of the
    record at byte ``off``) and ``buf`` the same area as bytes; both cover it twice (mapped twice,
    or a buffer laid out the same way). Each record becomes ``deliver(decode(buf, offset, length))``
    with the sample's offset and length; an exception from either is counted by ``on_error`` and
    costs that record only. Discarded records are skipped; the walk stops at a record still being
    written (BUSY_BIT), which the next walk starts from. Returns (records delivered or failed,
    the new consumer position). The loop is the hot path: flag tests share one branch. With the
    loader's decoder (``decode_at``) the call is made to it directly: compiled, a native call,
    not one through a Python callable's argument parsing."""
    n = 0
    native = decode is decode_at
    while cons < prod:
        off = cons & mask
        word: int = lens[off >> 2]  # an int where it is compiled: the flag tests and sums are native
        if word & 0xC0000000:  # BUSY_BIT | DISCARD_BIT
            if word & BUSY_BIT:
                break
            cons += ((word & LEN_MASK) + HDR_SZ + 7) & ~7
            continue
        cons += (word + HDR_SZ + 7) & ~7
        n += 1
        try:
            if native:
                deliver(cast(T, decode_at(buf, off + HDR_SZ, word)))
            else:
                deliver(decode(buf, off + HDR_SZ, word))
        except Exception:
            on_error()
    return n, cons


class RingReader:
    """A BPF ring buffer's fd, mapped as libbpf maps it; ``drain`` consumes it.

    ``data`` is the data area mapped twice (an mmap: slicing it gives ``bytes``), the buffer
    ``decode`` gets with each sample's offset. ``wait`` blocks on the fd with epoll: the
    kernel marks the ring readable only when a producer wakes it (BPF_RB_NO_WAKEUP records do
    not), exactly as libbpf's poll does. ``wakeups=False`` leaves epoll out, for a file laid out
    like the map (tests over a memfd, which epoll refuses)."""

    def __init__(self, map_fd: int, size: int, page_size: int = mmap.PAGESIZE, wakeups: bool = True) -> None:
        if size <= 0 or size & (size - 1) or size % page_size:
            raise ValueError(f"ring size must be a power of two multiple of the page size, got {size}")
        self.size = size
        self._mask = size - 1
        rw, ro = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
        maps: list[mmap.mmap] = []
        try:
            maps.append(mmap.mmap(map_fd, page_size, mmap.MAP_SHARED, rw, offset=0))
            maps.append(mmap.mmap(map_fd, page_size, mmap.MAP_SHARED, ro, offset=page_size))
            maps.append(mmap.mmap(map_fd, 2 * size, mmap.MAP_SHARED, ro, offset=2 * page_size))
        except BaseException:
            for m in maps:
                m.close()
            raise
        self._consumer, self._producer, self.data = maps
        self._prod = memoryview(self._producer)[:8].cast("Q")  # producer_pos
        # consumer_pos is written through an 8-byte view: one aligned 64-bit store, which a
        # producer on another CPU sees whole. struct.pack_into("=Q") zero-fills the field and
        # then stores it byte by byte: a producer reading it meanwhile saw 0 (every byte ever
        # written still unread) and refused the record -- "ring full" with the ring nearly
        # empty (tests/integration/test_ring_reader.py; bench/README, sixth round).
        self._cons_word = memoryview(self._consumer)[:8].cast("Q")
        self._lens = memoryview(self.data).cast("I")  # the data area as header-sized words
        self._cons: int = int(self._cons_word[0])
        self._closed = False
        # Registered now, while nothing is attached: registering a ring that already holds
        # records marks it readable once, and the first wait would return at once.
        self._epoll: Optional[select.epoll] = None
        if wakeups:
            self._epoll = select.epoll()
            self._epoll.register(map_fd, select.EPOLLIN)

    @property
    def consumer_pos(self) -> int:
        return self._cons

    def producer_pos(self) -> int:
        return int(self._prod[0])

    def unread(self) -> int:
        """Bytes the producers committed that this reader has not consumed yet."""
        return int(self._prod[0]) - self._cons

    def stored_consumer_pos(self) -> int:
        """consumer_pos as the producers read it: the mapped page, not this reader's own copy
        (after a fork, another process's reader is the one that moves it)."""
        return int(self._cons_word[0])

    def drain(
        self,
        decode: Callable[[Any, int, int], T],
        deliver: Callable[[T], object],
        on_error: Callable[[], object],
        batch_bytes: Optional[int] = None,
        between: Optional[Callable[[], object]] = None,
    ) -> int:
        """Consume what the producers committed before this call (what they add meanwhile waits
        for the next call, so a busy ring cannot keep the caller here forever). The consumer
        position is stored after each ``batch_bytes`` (default: an eighth of the ring), so
        producers get space back while the rest is decoded, and ``between`` is called then; a
        true answer from it ends the drain there (what is left waits for the next call).
        Returns the records consumed."""
        step = batch_bytes or max(self.size >> 3, 1)
        prod: int = self._prod[0]
        total = 0
        while self._cons < prod:
            n, cons = consume(self._lens, self.data, self._mask, self._cons, min(prod, self._cons + step),
                              decode, deliver, on_error)  # fmt: skip
            total += n
            if cons == self._cons:
                break  # a record still being written
            self.release(cons)
            if between is not None and between():
                break
        return total

    def release(self, pos: int) -> None:
        """Hand the space before ``pos`` back to the producers (one store per batch)."""
        if pos != self._cons:
            self._cons = pos
            self._cons_word[0] = pos

    def wait(self, timeout_ms: int) -> bool:
        """Block until a producer wakes the ring or ``timeout_ms`` passes (0: do not block)."""
        if self._epoll is None:
            raise RuntimeError("made with wakeups=False: nothing can wake it")
        try:
            return bool(self._epoll.poll(max(timeout_ms, 0) / 1000, 1))
        except InterruptedError:  # a signal; Python retries EINTR itself, this is belt and braces
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None
        self._prod.release()
        self._cons_word.release()
        self._lens.release()
        for m in (self.data, self._producer, self._consumer):
            m.close()


class Pacer:
    """A drain's ``between`` (``RingReader.drain``), compiled with the walk it paces: the CPU handed
    back once ``pause`` is due (every 250 us, hostagent.yielding), and only then -- not at every step
    of ~15 records -- ``watch`` told the unread bytes (the daemon's heartbeat and the idle policy's
    floor: a long drain is progress, and how far behind it is); true, ending the drain, once
    ``deadline`` (time.monotonic()) has passed."""

    def __init__(self, ring: RingReader, pause: CpuYield, watch: Optional[Callable[[int], object]] = None,
                 deadline: Optional[float] = None) -> None:
        self.ring = ring
        self.pause = pause
        self.watch = watch
        self.deadline = deadline

    def __call__(self) -> bool:
        if self.pause.due():
            watch = self.watch
            if watch is not None:
                watch(self.ring.unread())
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline


def ring_size_of(map_fd: int) -> Optional[int]:
    """max_entries of a BPF map, from /proc/self/fdinfo (a ring's data size in bytes)."""
    try:
        entries = read_fdinfo(map_fd).get("max_entries")
    except OSError:
        return None
    return int(entries) if entries is not None else None
