"""The ring-buffer consumer over buffers laid out like a BPF ring's data area (kernel/bpf/ringbuf.c).

A real ring maps its data area twice back to back; ``RingImage`` writes every byte at its offset
in both copies, so a record that wraps past the end reads contiguously, as it does from the
kernel's mapping. The real ring is read in tests/integration/test_ring_reader.py.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostagent import yielding
from hostagent.probes import ring
from hostagent.probes.ring import BUSY_BIT, DISCARD_BIT, RingReader, consume
from hostagent.yielding import CpuYield

SIZE = 4096


class RingImage:
    """A data area of ``size`` bytes, doubled, plus the positions a producer would keep."""

    def __init__(self, size: int = SIZE, start: int = 0) -> None:
        self.size = size
        self.buf = bytearray(2 * size)
        self.prod = start  # next record's position (positions only grow)

    def write(self, pos: int, data: bytes) -> None:
        for i, b in enumerate(data):
            off = (pos + i) & (self.size - 1)
            self.buf[off] = self.buf[off + self.size] = b

    def put(self, sample: bytes, flags: int = 0) -> int:
        """Appends a record (header word = length | flags, then the sample); returns its position."""
        pos = self.prod
        self.write(pos, struct.pack("=II", len(sample) | flags, 0) + sample)
        self.prod += (len(sample) + 8 + 7) & ~7
        return pos

    def set_flags(self, pos: int, length: int, flags: int) -> None:
        self.write(pos, struct.pack("=I", length | flags))

    def read(self, cons: int, prod: int | None = None) -> tuple[list[bytes], int, int]:
        """consume() with a decode that copies the sample: (samples, errors, new position)."""
        out: list[bytes] = []
        errors: list[int] = []
        lens = memoryview(self.buf).cast("I")
        n, pos = consume(lens, self.buf, self.size - 1, cons, self.prod if prod is None else prod,
                         raw, out.append, lambda: errors.append(1))  # fmt: skip
        assert n == len(out) + len(errors)
        return out, len(errors), pos


def raw(buf: Any, off: int, length: int) -> bytes:
    return bytes(buf[off : off + length])


def test_records_in_order_and_the_position_after_the_last() -> None:
    img = RingImage()
    for s in (b"first", b"x" * 8, b"third record, 27 bytes long"):
        img.put(s)
    samples, errors, pos = img.read(0)
    assert samples == [b"first", b"x" * 8, b"third record, 27 bytes long"]
    assert errors == 0
    # 8-byte header + sample, rounded up to 8: 5 -> 16, 8 -> 16, 27 -> 40
    assert pos == img.prod == 72


@pytest.mark.parametrize(("length", "step"), [(0, 8), (1, 16), (7, 16), (8, 16), (9, 24), (104, 112), (105, 120)])
def test_each_record_takes_header_plus_length_rounded_to_8(length: int, step: int) -> None:
    img = RingImage()
    img.put(b"a" * length)
    img.put(b"next")
    samples, _, pos = img.read(0)
    assert samples == [b"a" * length, b"next"]
    assert img.prod - 16 == step and pos == step + 16


def test_a_record_that_wraps_past_the_end_reads_whole() -> None:
    img = RingImage(start=10 * SIZE + SIZE - 24)  # 24 bytes before the end, many laps in
    img.put(b"A" * 8)  # 16 bytes: header + sample end 8 bytes before the end
    wrapping = bytes(range(100))
    img.put(wrapping)  # header in the last 8 bytes, the whole sample in the second copy
    img.put(b"after the wrap")
    samples, _, pos = img.read(10 * SIZE + SIZE - 24)
    assert samples == [b"A" * 8, wrapping, b"after the wrap"]
    assert pos == img.prod
    # its header sits in the last 8 bytes, its sample at the start of the area: read through
    # the second copy, it follows the header
    assert bytes(img.buf[:100]) == wrapping


def test_a_record_split_across_the_end_mid_sample() -> None:
    img = RingImage(start=SIZE - 40)
    sample = bytes(range(64))  # header at SIZE-40, sample bytes SIZE-32 .. SIZE+32
    img.put(sample)
    samples, _, pos = img.read(SIZE - 40)
    assert samples == [sample] and pos == SIZE + 32


def test_stops_at_a_record_still_being_written_and_resumes_there() -> None:
    img = RingImage()
    img.put(b"done")
    busy_at = img.put(b"being written", BUSY_BIT)
    img.put(b"committed after it")
    samples, _, pos = img.read(0)
    assert samples == [b"done"]
    assert pos == busy_at  # nothing past a busy record is consumed, even what is committed
    img.set_flags(busy_at, len(b"being written"), 0)  # the producer commits it
    samples, _, pos = img.read(pos)
    assert samples == [b"being written", b"committed after it"]
    assert pos == img.prod


def test_discarded_records_are_consumed_not_delivered() -> None:
    img = RingImage()
    img.put(b"kept 1")
    img.put(b"given up by the producer", DISCARD_BIT)
    img.put(b"kept 2")
    samples, _, pos = img.read(0)
    assert samples == [b"kept 1", b"kept 2"]
    assert pos == img.prod


def test_only_discarded_records_move_the_position_and_deliver_nothing() -> None:
    img = RingImage()
    img.put(b"z" * 30, DISCARD_BIT)
    samples, errors, pos = img.read(0)
    assert (samples, errors, pos) == ([], 0, 40)


def test_nothing_between_equal_positions() -> None:
    img = RingImage(start=128)
    assert img.read(128) == ([], 0, 128)


def test_stops_at_the_given_producer_position() -> None:
    img = RingImage()
    img.put(b"one")
    second = img.put(b"two")
    img.put(b"three")
    assert img.read(0, prod=second) == ([b"one"], 0, second)


def test_a_failing_record_is_counted_and_the_rest_delivered() -> None:
    img = RingImage()
    for s in (b"ok-1", b"boom", b"ok-2"):
        img.put(s)
    out: list[bytes] = []
    errors: list[int] = []

    def decode(buf: Any, off: int, length: int) -> bytes:
        sample = raw(buf, off, length)
        if sample == b"boom":
            raise ValueError("bad record")
        return sample

    lens = memoryview(img.buf).cast("I")
    n, pos = consume(lens, img.buf, SIZE - 1, 0, img.prod, decode, out.append, lambda: errors.append(1))
    assert (n, out, len(errors), pos) == (3, [b"ok-1", b"ok-2"], 1, img.prod)


@given(
    st.integers(min_value=0, max_value=3 * SIZE),
    st.lists(st.tuples(st.binary(max_size=200), st.booleans()), max_size=12),
)
def test_any_sequence_reads_back_exactly(start: int, records: list[tuple[bytes, bool]]) -> None:
    start &= ~7  # positions are 8-aligned
    img = RingImage(start=start)
    for sample, discarded in records:  # at most 12 * 208 bytes: never more than one lap
        img.put(sample, DISCARD_BIT if discarded else 0)
    samples, errors, pos = img.read(start)
    assert samples == [s for s, d in records if not d]
    assert (errors, pos) == (0, img.prod)


# ---- RingReader over a memfd laid out like the map's mmap offsets ------------------------------

PAGE = mmap.PAGESIZE


class MemfdRing:
    """A memfd with the ring map's file layout: consumer page, producer page, data area twice.
    Stands in for the BPF map's fd (epoll is not used: a memfd is never "woken")."""

    def __init__(self, size: int = SIZE) -> None:
        self.size = size
        self.fd = os.memfd_create("ring-test")
        os.ftruncate(self.fd, 2 * PAGE + 2 * size)
        self.img = RingImage(size)

    def publish(self) -> None:
        os.pwrite(self.fd, bytes(self.img.buf), 2 * PAGE)
        os.pwrite(self.fd, struct.pack("=Q", self.img.prod), PAGE)

    def consumer_pos(self) -> int:
        return int(struct.unpack("=Q", os.pread(self.fd, 8, 0))[0])

    def close(self) -> None:
        os.close(self.fd)


def test_reader_drains_in_batches_and_stores_the_consumer_position() -> None:
    mem = MemfdRing()
    samples = [bytes([i]) * (i * 7 % 90) for i in range(40)]
    for s in samples:
        mem.img.put(s)
    mem.publish()
    reader = RingReader(mem.fd, SIZE, PAGE, wakeups=False)
    stored: list[int] = []
    got: list[bytes] = []

    def deliver(sample: bytes) -> None:
        got.append(sample)
        stored.append(mem.consumer_pos())

    paused_at: list[tuple[int, int]] = []  # (records delivered, stored position) at each pause

    try:
        n = reader.drain(raw, deliver, lambda: None, batch_bytes=256,
                         between=lambda: paused_at.append((len(got), mem.consumer_pos())))
        assert (n, got) == (40, samples)
        assert mem.consumer_pos() == reader.consumer_pos == mem.img.prod
        # the position was stored once per batch of ~256 bytes, not per record
        assert 4 <= len(set(stored)) <= mem.img.prod // 256 + 1
        # a pause after every batch, once the batch's space is handed back to the producers
        assert len(paused_at) == len(set(stored))
        assert [n for n, _ in paused_at] == sorted({n for n, _ in paused_at})
        assert paused_at[-1] == (40, mem.img.prod)
        assert all(0 < pos <= mem.img.prod for _, pos in paused_at)
        assert reader.drain(raw, deliver, lambda: None) == 0
    finally:
        reader.close()
        mem.close()


def test_reader_leaves_what_is_committed_during_a_drain_for_the_next_one() -> None:
    mem = MemfdRing()
    mem.img.put(b"before")
    mem.publish()
    reader = RingReader(mem.fd, SIZE, PAGE, wakeups=False)
    got: list[bytes] = []

    def deliver(sample: bytes) -> None:
        got.append(sample)
        if sample == b"before":  # a producer adds a record while we decode
            mem.img.put(b"during")
            mem.publish()

    try:
        assert reader.drain(raw, deliver, lambda: None) == 1
        assert reader.drain(raw, deliver, lambda: None) == 1
        assert got == [b"before", b"during"]
    finally:
        reader.close()
        mem.close()


def test_reader_starts_from_the_stored_consumer_position() -> None:
    mem = MemfdRing()
    mem.img.put(b"already consumed")
    second = mem.img.put(b"new")
    mem.publish()
    os.pwrite(mem.fd, struct.pack("=Q", second), 0)
    reader = RingReader(mem.fd, SIZE, PAGE, wakeups=False)
    got: list[bytes] = []
    try:
        assert reader.drain(raw, got.append, lambda: None) == 1
        assert got == [b"new"]
    finally:
        reader.close()
        mem.close()


@pytest.mark.parametrize("size", [0, 3000, 3 * PAGE, PAGE // 2])
def test_reader_refuses_a_size_that_is_not_a_power_of_two_number_of_pages(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingReader(-1, size, PAGE)


def test_ring_size_of_reads_max_entries_from_fdinfo_and_none_for_other_fds() -> None:
    r, w = os.pipe()
    try:
        assert ring.ring_size_of(r) is None  # a pipe has no max_entries line
    finally:
        os.close(r)
        os.close(w)


def test_a_true_answer_from_between_ends_the_drain_and_the_next_one_goes_on_from_there() -> None:
    mem = MemfdRing()
    samples = [bytes([i]) * 40 for i in range(30)]
    for s in samples:
        mem.img.put(s)
    mem.publish()
    reader = RingReader(mem.fd, SIZE, PAGE, wakeups=False)
    got: list[bytes] = []
    steps = [0]

    def two_steps() -> bool:  # a burst's budget spent after the second step
        steps[0] += 1
        return steps[0] >= 2

    try:
        first = reader.drain(raw, got.append, lambda: None, batch_bytes=256, between=two_steps)
        assert 0 < first < 30 and got == samples[:first]
        assert mem.consumer_pos() == reader.consumer_pos < mem.img.prod  # what was read is handed back
        rest = reader.drain(raw, got.append, lambda: None)
        assert first + rest == 30 and got == samples
        assert mem.consumer_pos() == mem.img.prod
    finally:
        reader.close()
        mem.close()



def _memfd_capture(size: int, records: int, after_ns: int, told: list[int]) -> tuple[Any, MemfdRing]:
    """A BpfCapture (raw records) over a memfd ring holding ``records`` of 128 bytes (16 to a 2 KiB
    drain step), pausing every ``after_ns`` (its yields no-ops), telling ``told`` the backlog."""
    from hostagent.probes import loader

    mem = MemfdRing(size)
    for _ in range(records):
        mem.img.put(b"r" * 120)
    mem.publish()
    cap = loader.BpfCapture(on_event=lambda _: None, raw_records=True, ring_bytes=size)
    cap._ring = RingReader(mem.fd, size, PAGE, wakeups=False)
    cap._pause = CpuYield(after_ns)
    cap.on_backlog = told.append
    return cap, mem


@pytest.mark.parametrize(("after_ns", "expected"), [
    (10**15, [640 * 128]),  # never due: before the drain only
    (0, [(640 - 16 * i) * 128 for i in range(41)]),  # due at every step: before, and after each of 40
])
def test_a_drain_tells_the_backlog_at_its_start_and_where_its_pause_is_due_not_at_every_step(
        monkeypatch: pytest.MonkeyPatch, after_ns: int, expected: list[int]) -> None:
    """BpfCapture.poll: ``on_backlog`` hears the unread bytes before the drain and again only where
    the pause was due (every 250 us live). It was told at every 2 KiB step: an interpreted call
    chain per ~15 records, with the interpreted walk ~13% of the poll thread at the "20k" level."""
    monkeypatch.setattr(yielding, "sched_yield", lambda: 0)
    told: list[int] = []
    cap, mem = _memfd_capture(128 << 10, 640, after_ns, told)
    try:
        assert cap.poll(0) == 640
        assert told == expected
    finally:
        cap._ring.close()
        mem.close()


def test_the_pacer_ends_a_drain_once_its_deadline_has_passed_and_watches_only_when_due(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yielding, "sched_yield", lambda: 0)
    mem = MemfdRing()
    mem.img.put(b"x")
    mem.publish()
    reader = RingReader(mem.fd, SIZE, PAGE, wakeups=False)
    told: list[int] = []
    never, always = CpuYield(10**15), CpuYield(0)
    never.start()
    try:
        assert ring.Pacer(reader, never, told.append, deadline=time.monotonic() - 1)() is True
        assert told == []
        assert ring.Pacer(reader, always, told.append, deadline=time.monotonic() + 60)() is False
        assert told == [mem.img.prod]  # nothing consumed yet: all of it unread
        assert ring.Pacer(reader, always)() is False  # no watch, no deadline
    finally:
        reader.close()
        mem.close()


def test_the_loaders_decoder_is_called_directly_and_gives_what_a_wrapper_of_it_gives() -> None:
    from hostagent.probes import events as ev
    from tests.unit.test_kernel_events import record

    assert ring.decode_at is ev.decode_at  # what consume compares the decoder with: then a native call
    img = RingImage()
    for rec in (record(b"GET / HTTP/1.1\r\n", kind=1, size=16, pid=7), record(kind=0), record(b"x", kind=2, fd=3)):
        img.put(rec)  # kind 0 is not a kind: that record fails, the rest is delivered
    lens = memoryview(img.buf).cast("I")
    buf = bytes(img.buf)  # slices of it are bytes, as the ring mapping's are
    got: dict[str, tuple[list[Any], int, tuple[int, int]]] = {}
    for name, decode in (("direct", ev.decode_at), ("wrapped", lambda b, o, n: ev.decode_at(b, o, n))):
        out: list[Any] = []
        errors: list[int] = []
        res = consume(lens, buf, SIZE - 1, 0, img.prod, decode, out.append, lambda e=errors: e.append(1))
        got[name] = (out, len(errors), res)
    assert got["direct"] == got["wrapped"]
    out, errors, (n, pos) = got["direct"]
    assert ([(e.pid, e.fd, e.data) for e in out], errors, n, pos) == ([(7, 0, b"GET / HTTP/1.1\r\n"), (0, 3, b"x")],
                                                                     1, 3, img.prod)
