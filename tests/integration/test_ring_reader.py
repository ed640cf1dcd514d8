"""RingReader against a real BPF ring buffer that a real BPF program fills (root, real BPF).

A small program on the write() syscall tracepoint copies what this test process (or the one
process the ``who`` map names) writes to one marker fd into a one-page ring, so the test decides
every record's bytes and length exactly: records wrap around the page many times, discarded
records come from bpf_ringbuf_discard, and wake-ups are chosen per record (BPF_RB_NO_WAKEUP /
BPF_RB_FORCE_WAKEUP). No network traffic.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hostagent.kernel import ensure_tracefs, find_kernel_headers
from hostagent.probes.ring import RingReader, ring_size_of

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

RUNTIME_DIR = "/dev/shm/hostagent-test-bpf"  # shared with test_bpf_capture: the merged header tree
MARKER_FD = 987
PAGE = 4096

# sample[0] says how to submit: 'W' force a wake-up, 'D' reserve 64 bytes and discard them,
# anything else: no wake-up. The sample is what write() was given (1..512 bytes).
PROGRAM = r"""
#define MAX 512
BPF_RINGBUF_OUTPUT(ring, 1);
BPF_ARRAY(lost, u64, 1);
BPF_ARRAY(who, u32, 1);  /* the writing process's tgid */
struct scratch_t { char b[MAX]; };
BPF_PERCPU_ARRAY(scratch, struct scratch_t, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    int zero = 0;
    u32 *who_p = who.lookup(&zero);
    if (!who_p || (bpf_get_current_pid_tgid() >> 32) != *who_p || args->fd != MARKER_FD)
        return 0;
    u32 n = args->count;
    struct scratch_t *s = scratch.lookup(&zero);
    if (!s || n == 0 || n > MAX)
        return 0;
    char *buf = s->b;
    if (bpf_probe_read_user(buf, n, args->buf))
        return 0;
    if (buf[0] == 'D') {
        void *r = ring.ringbuf_reserve(64);
        if (r)
            ring.ringbuf_discard(r, 0);
        return 0;
    }
    u64 flags = buf[0] == 'W' ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
    if (ring.ringbuf_output(buf, n, flags)) {
        u64 *l = lost.lookup(&zero);
        if (l)
            __sync_fetch_and_add(l, 1);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def bpf() -> Iterator[Any]:
    from pathlib import Path

    from bcc import BPF

    ensure_tracefs()
    find_kernel_headers(None, Path(RUNTIME_DIR))
    b = BPF(text=PROGRAM.encode(), cflags=[f"-DMARKER_FD={MARKER_FD}"])
    yield b
    b.cleanup()


@pytest.fixture()
def producer(bpf: Any) -> Iterator[tuple[Any, RingReader]]:
    fd = os.open("/dev/null", os.O_WRONLY)
    os.dup2(fd, MARKER_FD)
    os.close(fd)
    ring = bpf[b"ring"]
    reader = RingReader(ring.map_fd, PAGE)
    reader.drain(_raw, lambda _: None, lambda: None)  # whatever an earlier test left
    bpf[b"lost"][ctypes.c_int(0)] = ctypes.c_uint64(0)
    bpf[b"who"][ctypes.c_int(0)] = ctypes.c_uint32(os.getpid())
    yield bpf, reader
    reader.close()
    os.close(MARKER_FD)


def _raw(buf: Any, off: int, length: int) -> bytes:
    return bytes(buf[off : off + length])


def emit(*samples: bytes) -> None:
    for s in samples:
        assert os.write(MARKER_FD, s) == len(s)


def lost(bpf: Any) -> int:
    return int(bpf[b"lost"][ctypes.c_int(0)].value)


def drain(reader: RingReader) -> tuple[list[bytes], int]:
    got: list[bytes] = []
    errors: list[int] = []
    n = reader.drain(_raw, got.append, lambda: errors.append(1))
    assert n == len(got) + len(errors)
    return got, len(errors)


def test_the_map_is_one_page(producer: tuple[Any, RingReader]) -> None:
    bpf, _ = producer
    assert ring_size_of(bpf[b"ring"].map_fd) == PAGE


def test_records_read_back_exactly_across_many_wraps(producer: tuple[Any, RingReader]) -> None:
    """~40 KiB through a 4 KiB ring, drained after each ~2.6 KiB round: every record comes back
    byte for byte (the ones that straddle the end included) and none is lost, so the consumer
    position we store really hands the space back to the kernel."""
    bpf, reader = producer
    start = reader.consumer_pos
    sent: list[bytes] = []
    got: list[bytes] = []
    for rnd in range(16):
        batch = [bytes([65 + (rnd + i) % 26]) * (1 + (rnd * 37 + i * 53) % 300) for i in range(16)]
        batch = [b for b in batch if b[:1] not in (b"D", b"W")]
        emit(*batch)
        sent += batch
        g, errors = drain(reader)
        assert errors == 0
        got += g
    assert got == sent
    assert lost(bpf) == 0
    assert reader.consumer_pos - start > 8 * PAGE  # wrapped around many times
    assert reader.consumer_pos == reader.producer_pos()


def test_without_draining_the_ring_fills(producer: tuple[Any, RingReader]) -> None:
    bpf, reader = producer
    emit(*[b"f" * 500] * 12)  # 12 * 512 bytes > one page
    assert lost(bpf) >= 4
    got, _ = drain(reader)
    assert got == [b"f" * 500] * (12 - lost(bpf))


def test_discarded_records_are_skipped(producer: tuple[Any, RingReader]) -> None:
    _, reader = producer
    before = reader.producer_pos()
    emit(b"kept-1", b"D discard me", b"kept-2")
    assert reader.producer_pos() - before == 16 + 72 + 16  # the discarded 64 bytes took space
    assert drain(reader) == ([b"kept-1", b"kept-2"], 0)
    assert reader.consumer_pos == reader.producer_pos()


def test_a_failing_record_costs_that_record_only(producer: tuple[Any, RingReader]) -> None:
    _, reader = producer
    emit(b"one", b"bad", b"three")
    got: list[bytes] = []
    errors: list[int] = []

    def deliver(sample: bytes) -> None:
        if sample == b"bad":
            raise RuntimeError("a pipeline bug")
        got.append(sample)

    assert reader.drain(_raw, deliver, lambda: errors.append(1)) == 3
    assert (got, errors) == ([b"one", b"three"], [1])
    assert reader.consumer_pos == reader.producer_pos()


def test_no_wakeup_records_do_not_end_the_wait_and_a_forced_one_does(producer: tuple[Any, RingReader]) -> None:
    _, reader = producer
    reader.wait(0)
    emit(b"quiet")
    t0 = time.monotonic()
    assert reader.wait(200) is False  # epoll: a BPF_RB_NO_WAKEUP record leaves the fd unsignalled
    assert time.monotonic() - t0 >= 0.19
    emit(b"W wake up")
    t0 = time.monotonic()
    assert reader.wait(2000) is True
    assert time.monotonic() - t0 < 0.5
    assert drain(reader) == ([b"quiet", b"W wake up"], 0)
    assert reader.wait(50) is False  # drained: level-triggered readiness is gone


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a producer and a consumer on two CPUs")
def test_producers_never_see_a_torn_consumer_position(producer: tuple[Any, RingReader]) -> None:
    """The kernel reads consumer_pos at every reservation, on the producer's CPU, while the
    consumer may be storing it on another one: it must see the old value or the new one. Written
    with ``struct.pack_into`` (which zero-fills, then stores byte by byte) a producer now and then
    saw 0 -- every byte ever written unread, far more than the ring holds -- and the record was
    refused: "ring full" with the ring nearly empty (bench/README, sixth round).

    A child process on another CPU writes bursts of 16 records (256 bytes of a 4 KiB ring) and
    waits until each burst is consumed, so the ring never holds more than that; this process
    drains with a consumer store after every record. Nothing may be refused."""
    bpf, reader = producer
    cpus = sorted(os.sched_getaffinity(0))
    bursts, per_burst, record = 3000, 16, b"r" * 8  # 16-byte records with the ring's header
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: the producer
        code = 1
        try:
            os.sched_setaffinity(0, {cpus[1]})
            os.read(go_r, 1)
            for _ in range(bursts):
                target = reader.producer_pos() + per_burst * 16
                for _ in range(per_burst):
                    os.write(MARKER_FD, record)
                deadline = time.monotonic() + 0.5
                while reader.stored_consumer_pos() < target:
                    if time.monotonic() > deadline:
                        os._exit(3)  # never consumed: some of the burst was refused
            code = 0
        finally:
            os._exit(code)
    saved = os.sched_getaffinity(0)
    got = 0
    try:
        os.sched_setaffinity(0, {cpus[0]})
        bpf[b"who"][ctypes.c_int(0)] = ctypes.c_uint32(pid)
        os.write(go_w, b"g")
        while True:
            got += reader.drain(_raw, lambda _: None, lambda: None, batch_bytes=16)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        got += reader.drain(_raw, lambda _: None, lambda: None)
    finally:
        os.sched_setaffinity(0, saved)
        os.close(go_r)
        os.close(go_w)
    assert lost(bpf) == 0, f"{lost(bpf)} records refused by a ring that never held more than 256 bytes"
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == bursts * per_burst
