"""The ctypes mirror of bpf/events.h and the decoder, over hand-built records."""

from __future__ import annotations

import ctypes
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostagent.model import Direction, EventKind
from hostagent.probes import decode
from hostagent.probes import events as ev


def record(payload: bytes = b"", **fields: object) -> bytes:
    h = ev.EventHdr()
    for k, v in fields.items():
        if k in ("peer_addr", "local_addr"):
            ctypes.memmove(getattr(h, k), bytes(v).ljust(16, b"\0"), 16)  # type: ignore[call-overload]
        else:
            setattr(h, k, v)
    h.captured_len = fields.get("captured_len", len(payload))  # type: ignore[assignment]
    return bytes(h) + payload


def test_layout_matches_the_c_comments() -> None:
    # offsets written next to each field in bpf/events.h
    want = {"ts_ns": 0, "cgroup_id": 8, "size": 16, "pid": 24, "tid": 28, "fd": 32, "captured_len": 36,
            "kind": 40, "direction": 41, "syscall": 42, "flags": 43, "family": 44, "sock_type": 46,
            "peer_port": 48, "peer_addr": 52, "comm": 68, "local_port": 84, "tail_len": 86,
            "local_addr": 88}  # fmt: skip
    assert {k: getattr(ev.EventHdr, k).offset for k in want} == want
    assert ctypes.sizeof(ev.EventHdr) == ev.HDR_SIZE == 104
    assert ctypes.sizeof(ev.SockInfo) == 80
    assert (ev.SockInfo.h2.offset, ev.SockInfo.h2_lost.offset, ev.SockInfo.h2_left.offset) == (63, 66, 72)
    assert ctypes.sizeof(ev.RecentFds) == 24
    assert ev.HDR_FORMAT == "<QQQIIiIBBBBHHHH16s16sHH16s"


def test_decode_data_event_from_bytes() -> None:
    raw = record(
        b"GET / HTTP/1.1\r\n",
        ts_ns=123, cgroup_id=7, size=400, pid=10, tid=11, fd=5, kind=1, direction=0, syscall=6,
        family=socket.AF_INET, sock_type=1, peer_port=8080, peer_addr=bytes([127, 0, 0, 1]), comm=b"curl",
    )  # fmt: skip
    e = ev.decode(raw, len(raw))
    assert (e.kind, e.direction, e.ts_ns, e.cgroup_id, e.pid, e.tid, e.fd) == (
        EventKind.DATA,
        Direction.EGRESS,
        123,
        7,
        10,
        11,
        5,
    )
    assert (e.size, e.data) == (400, b"GET / HTTP/1.1\r\n")
    assert (e.family, e.peer_addr, e.peer_port, e.sock_type, e.comm) == (2, "127.0.0.1", 8080, 1, "curl")


@pytest.mark.parametrize(
    ("family", "local_addr", "local_port", "want"),
    [
        (socket.AF_INET, bytes([127, 0, 0, 2]), 19400, ("127.0.0.2", 19400)),  # from the handshake
        (socket.AF_INET, bytes(4), 19401, ("0.0.0.0", 19401)),  # wildcard-bound listener: port only
        (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::1"), 443, ("::1", 443)),
        (socket.AF_INET, bytes([127, 0, 0, 1]), 0, ("", 0)),  # port 0: the local end is unknown
    ],
)
def test_decode_local_endpoint(family: int, local_addr: bytes, local_port: int, want: tuple[str, int]) -> None:
    raw = record(kind=1, family=family, peer_port=5432, peer_addr=bytes([127, 0, 0, 1]),
                 local_addr=local_addr, local_port=local_port)  # fmt: skip
    e = ev.decode(raw, len(raw))
    assert (e.local_addr, e.local_port) == want


def test_decode_from_address_equals_decode_from_bytes() -> None:
    raw = record(b"x" * 50, kind=1, direction=1, family=socket.AF_INET6, peer_port=443,
                 peer_addr=socket.inet_pton(socket.AF_INET6, "::1"), comm=b"nginx")  # fmt: skip
    buf = ctypes.create_string_buffer(raw, len(raw))
    assert ev.decode(ctypes.addressof(buf), len(raw)) == ev.decode(raw, len(raw))
    assert ev.decode(raw, len(raw)).peer_addr == "::1"


@pytest.mark.parametrize(
    ("payload", "size", "tail_len", "data", "tail", "frames"),
    [
        (b"HEAD" + b"tail", 100, 4, b"HEAD", b"tail", b""),  # a gap of 92 bytes between them
        (b"HEADtail", 8, 4, b"HEADtail", b"", b""),  # whole (the kernel sends no tail_len then)
        (b"HEADtail", 100, 0, b"HEADtail", b"", b""),  # no tail copied (a fault, the iovec limit)
        (b"abc", 100, 9, b"abc", b"", b""),  # a corrupt tail_len larger than the payload: ignored
        # an HTTP/2 frame block in place of the tail (TAIL_IS_FRAMES): a struct h2_block only
        (b"HEAD" + bytes(16), 100_000, 0x8000 | 16, b"HEAD", b"", bytes(16)),
        (b"abc", 100_000, 0x8000 | 9, b"abc", b"", b""),  # corrupt: ignored as above
        # a call a few bytes over the head: its block is longer than those bytes (nginx's 4105)
        (b"HEAD" + bytes(16), 10, 0x8000 | 16, b"HEAD", b"", bytes(16)),
    ],
)
def test_a_big_calls_tail_comes_apart_from_its_head(payload: bytes, size: int, tail_len: int, data: bytes,
                                                     tail: bytes, frames: bytes) -> None:
    raw = record(payload, kind=1, size=size, tail_len=tail_len)
    e = ev.decode(raw, len(raw))
    assert (e.size, e.data, e.tail, e.frames) == (size, data, tail, frames)


def test_captured_len_never_reads_past_the_record() -> None:
    raw = record(b"abc", kind=1, captured_len=1000)  # a corrupt length
    assert ev.decode(raw, len(raw)).data == b"abc"


def test_no_peer_gives_empty_address() -> None:
    raw = record(kind=5, comm=b"bash")
    e = ev.decode(raw, len(raw))
    assert (e.kind, e.peer_addr, e.peer_port, e.comm) == (EventKind.EXEC, "", 0, "bash")


@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_decodes(kind: EventKind) -> None:
    raw = record(kind=int(kind))
    assert ev.decode(raw, len(raw)).kind is kind


@pytest.mark.parametrize(("kind", "direction"), [(0, 0), (10, 0), (200, 1), (1, 2), (1, 255)])
def test_a_kind_or_direction_that_does_not_exist_raises(kind: int, direction: int) -> None:
    """The loader counts such a record as a callback error instead of handing on garbage."""
    raw = record(kind=kind, direction=direction)
    with pytest.raises((ValueError, IndexError)):
        ev.decode(raw, len(raw))


@given(st.binary(min_size=ev.HDR_SIZE, max_size=ev.HDR_SIZE + 64))
def test_decode_of_valid_kinds_never_raises(raw: bytes) -> None:
    b = bytearray(raw)
    b[40] = 1 + b[40] % len(EventKind)  # kind
    b[41] = b[41] % 2  # direction
    e = ev.decode(bytes(b), len(b))
    assert len(e.data) <= len(b) - ev.HDR_SIZE
    assert struct.unpack_from("<Q", b, 16)[0] == e.size


def test_capture_event_field_order_is_what_decode_passes_positionally() -> None:
    import dataclasses

    from hostagent.model import CaptureEvent

    names = [f.name for f in dataclasses.fields(CaptureEvent)]
    assert names[:14] == ["kind", "ts_ns", "pid", "tid", "fd", "cgroup_id", "direction", "size", "data",
                          "family", "peer_addr", "peer_port", "sock_type", "comm"]  # fmt: skip
    assert all(f.default is not dataclasses.MISSING for f in dataclasses.fields(CaptureEvent)[14:])


def test_capture_event_init_written_out_matches_its_fields() -> None:
    """CaptureEvent's __init__ is written by hand (compiled, it is C): every field, in order,
    positionally and by name, with the dataclass's defaults."""
    import dataclasses

    from hostagent.model import CaptureEvent, Direction, EventKind

    fields = dataclasses.fields(CaptureEvent)
    values: list[object] = [EventKind.CLOSE, 11, 12, 13, 14, 15, Direction.INGRESS, 17, b"d", 19, "p", 21, 22, "c",
                            "l", 25, 26, b"t", b"f"]  # fmt: skip
    assert len(values) == len(fields)
    positional = CaptureEvent(*values)  # type: ignore[arg-type]
    by_name = CaptureEvent(**{f.name: v for f, v in zip(fields, values)})  # type: ignore[arg-type]
    for f, v in zip(fields, values):
        assert getattr(positional, f.name) == v and getattr(by_name, f.name) == v, f.name
    required = [f for f in fields if f.default is dataclasses.MISSING]
    least = CaptureEvent(*values[: len(required)])  # type: ignore[arg-type]
    for f in fields[len(required):]:
        assert getattr(least, f.name) == f.default, f.name
    assert positional == by_name and positional != least


def test_decode_at_reads_a_record_in_place_in_a_mapping() -> None:
    import mmap

    region = mmap.mmap(-1, 8192)  # slices of an mmap are bytes, as with the ring's mapping
    raw = record(b"payload", kind=1, direction=1, family=socket.AF_INET, peer_port=6379,
                 peer_addr=bytes([127, 0, 0, 1]), comm=b"redis-cli")  # fmt: skip
    region[4000 : 4000 + len(raw)] = raw
    region[4000 + len(raw) : 4100 + len(raw)] = b"N" * 100  # the next record: never read into
    e = ev.decode_at(region, 4000, len(raw))
    assert e == ev.decode(raw, len(raw))
    assert (e.data, type(e.data), e.peer_addr, e.comm) == (b"payload", bytes, "127.0.0.1", "redis-cli")
    corrupt = record(b"abc", kind=1, captured_len=1000)
    region[0 : len(corrupt)] = corrupt
    assert ev.decode_at(region, 0, len(corrupt)).data == b"abc"


def v6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


@pytest.mark.parametrize(
    ("peer", "want"),
    [
        # an AF_INET6 socket accepting an IPv4 client: the kernel names it ::ffff:a.b.c.d
        (v6("::ffff:127.0.0.1"), "127.0.0.1"),
        (v6("::ffff:10.1.2.3"), "10.1.2.3"),  # bytes only: no traffic leaves loopback
        (v6("::1"), "::1"),
        (v6("::127.0.0.1"), "::127.0.0.1"),  # IPv4-compatible (deprecated), not mapped: left as is
        (v6("::fffe:7f00:1"), "::fffe:7f00:1"),
        (v6("64:ff9b::7f00:1"), "64:ff9b::7f00:1"),  # NAT64 prefix: a real IPv6 address
        (v6("fe80::ffff:7f00:1"), "fe80::ffff:7f00:1"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_ipv4_mapped_addresses_are_reported_as_ipv4(peer: bytes, want: str) -> None:
    raw = record(kind=1, family=socket.AF_INET6, peer_port=8080, peer_addr=peer, local_port=8080, local_addr=peer)
    e = ev.decode(raw, len(raw))
    assert (e.family, e.peer_addr, e.local_addr) == (socket.AF_INET6, want, want)
    assert ev.peer_str(socket.AF_INET6, peer) == want


def test_an_ipv6_peer_without_address_is_unknown_not_unspecified() -> None:
    """A socket received from another process and adopted at its first data call (bpf/capture.c:
    adopt) knows a true IPv6 peer's port but not its address: no peer address, never "::"."""
    raw = record(kind=1, family=socket.AF_INET6, peer_port=55684, peer_addr=bytes(16), local_port=29101,
                 local_addr=bytes(16))  # fmt: skip
    e = ev.decode(raw, len(raw))
    assert (e.peer_addr, e.peer_port, e.local_addr, e.local_port) == ("", 55684, "::", 29101)
    v4 = record(kind=1, family=socket.AF_INET, peer_port=55684, peer_addr=bytes(16))  # connect("0.0.0.0")
    assert ev.decode(v4, len(v4)).peer_addr == "0.0.0.0"


def test_memo_keeps_families_and_endpoints_apart() -> None:
    """The same 16 address bytes mean different addresses per family; a memo keyed on the raw
    header tail must not hand one the other's strings."""
    same = bytes([127, 0, 0, 1]) + bytes(12)
    v4 = record(kind=1, family=socket.AF_INET, peer_port=80, peer_addr=same, comm=b"a")
    v6_ = record(kind=1, family=socket.AF_INET6, peer_port=80, peer_addr=same, comm=b"a")
    other_port = record(kind=1, family=socket.AF_INET, peer_port=81, peer_addr=same, comm=b"a")
    other_comm = record(kind=1, family=socket.AF_INET, peer_port=80, peer_addr=same, comm=b"b")
    for _ in range(2):  # the second round comes from the memo
        got = [
            (e.family, e.peer_addr, e.peer_port, e.comm)
            for e in (ev.decode(r, len(r)) for r in (v4, v6_, other_port, other_comm))
        ]
        assert got == [(2, "127.0.0.1", 80, "a"), (10, "7f00:1::", 80, "a"), (2, "127.0.0.1", 81, "a"),
                       (2, "127.0.0.1", 80, "b")]  # fmt: skip


def test_memo_stays_bounded() -> None:
    for port in range(decode.CACHE_MAX + 10):
        raw = record(kind=1, family=socket.AF_INET, peer_port=port % 65536, peer_addr=bytes([127, 0, 0, 1]),
                     local_port=1 + port // 65536)  # fmt: skip
        assert ev.decode(raw, len(raw)).peer_port == port % 65536
    assert len(decode.tail_cache) <= decode.CACHE_MAX


class CountedReads(bytes):
    """A record whose item reads are counted: ``struct`` reads it through the buffer protocol."""

    reads: list[object]

    def __getitem__(self, key: object) -> object:  # type: ignore[override]
        self.reads.append(key)
        return super().__getitem__(key)  # type: ignore[index]


@pytest.mark.parametrize(("payload", "size", "tail_len"), [(b"GET / HTTP/1.1\r\n", 16, 0), (b"HEAD" + b"tail", 100, 4)])
def test_decode_reads_the_header_in_one_unpack_and_slices_only_the_payload(payload: bytes, size: int,
                                                                          tail_len: int) -> None:
    raw = record(payload, kind=1, size=size, tail_len=tail_len)
    buf = CountedReads(raw)
    buf.reads = []
    e = decode.decode_at(buf, 0, len(raw))
    assert e == ev.decode(raw, len(raw))
    # tail_len comes from the header bytes already unpacked, not two byte reads of the buffer
    assert all(isinstance(k, slice) for k in buf.reads), buf.reads
    assert len(buf.reads) == (2 if tail_len else 1)
