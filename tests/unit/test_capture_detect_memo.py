"""Protocol detection remembers which spec the first bytes of a connection select (looks_like is
a pure function of the bytes and direction), per set of enabled specs, bounded."""

from __future__ import annotations

import dataclasses

from hostagent.capture import tracker as tracker_mod
from hostagent.capture.tracker import SPECS_REFRESH_NS, ConnectionTracker
from hostagent.model import Direction, Role
from hostagent.protocols import http1, redis
from hostagent.protocols.base import ProtocolSpec
from tests.unit.test_capture import IN, OUT, REQ, RESP, data


class CountingLooksLike:
    """Wraps a real protocol's ``looks_like`` and counts the calls the tracker makes."""

    def __init__(self, inner: ProtocolSpec) -> None:
        self.inner = inner.looks_like
        self.calls = 0

    def __call__(self, payload: bytes, direction: Direction) -> bool:
        self.calls += 1
        return self.inner(payload, direction)


def counting(spec: ProtocolSpec) -> tuple[ProtocolSpec, CountingLooksLike]:
    looks = CountingLooksLike(spec)
    return dataclasses.replace(spec, looks_like=looks), looks


def test_same_first_bytes_tested_once_per_spec() -> None:
    r_spec, r_looks = counting(redis.SPEC)
    h_spec, h_looks = counting(http1.SPEC)
    t = ConnectionTracker(lambda: (r_spec, h_spec))
    calls = []
    for fd in range(10, 20):  # ten connections, each opening with the same request
        calls += t.handle(data(fd, IN, REQ, fd=fd))
        calls += t.handle(data(fd, OUT, RESP, fd=fd))
    assert [(c.role, c.conn.fd if c.conn else 0) for c in calls] == [(Role.SERVER, fd) for fd in range(10, 20)]
    assert (r_looks.calls, h_looks.calls) == (1, 1)
    assert t.stats()["detected_http"] == 10
    t.handle(data(30, OUT, REQ, fd=30))  # the same bytes the other way: another question
    assert (r_looks.calls, h_looks.calls) == (2, 2)


def test_memory_forgotten_when_the_enabled_specs_change() -> None:
    h_spec, h_looks = counting(http1.SPEC)
    enabled: dict[str, tuple[ProtocolSpec, ...]] = {"specs": (h_spec,)}
    t = ConnectionTracker(lambda: enabled["specs"])
    assert t.handle(data(1, IN, REQ, fd=3)) == []
    assert h_looks.calls == 1
    enabled["specs"] = ()
    late = 1 + SPECS_REFRESH_NS + 1
    t.handle(data(late, IN, REQ, fd=4))  # http is off now: not detected from the remembered answer
    assert t.stats()["detected_http"] == 1
    enabled["specs"] = (h_spec,)
    t.handle(data(late * 2, IN, REQ, fd=5))
    assert (t.stats()["detected_http"], h_looks.calls) == (2, 2)


def test_memory_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tracker_mod, "PICK_MEMO_MAX", 8)
    t = ConnectionTracker(lambda: (http1.SPEC,))
    for fd in range(100):
        t.handle(data(fd, IN, b"GET /%d HTTP/1.1\r\n\r\n" % fd, fd=fd))
    assert len(t._picks) <= 8  # type: ignore[attr-defined]
    assert t.stats()["detected_http"] == 100
