"""CpuYield: sched_yield() only once its time is up, counted from start() or the last yield."""

from __future__ import annotations

import time

import pytest

from hostagent import yielding
from hostagent.yielding import CpuYield


def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> tuple[list[int], list[int]]:
    """The module's clock reads ``now[0]``; each sched_yield() is noted in ``yields`` at that time."""
    now = [1_000]
    yields: list[int] = []
    monkeypatch.setattr(yielding.time, "monotonic_ns", lambda: now[0])
    monkeypatch.setattr(yielding, "sched_yield", lambda: yields.append(now[0]))
    return now, yields


def test_yields_once_the_time_is_up_then_counts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now, yields = _fake_clock(monkeypatch)
    pause = CpuYield(after_ns=100)
    pause.start()
    for t in (1_050, 1_099):  # not yet
        now[0] = t
        pause()
    assert yields == []
    now[0] = 1_100
    pause()
    assert yields == [1_100]
    now[0] = 1_150  # counted from the yield, not from start()
    pause()
    assert yields == [1_100]
    now[0] = 1_200
    pause()
    assert yields == [1_100, 1_200]
    now[0] = 5_000  # start() begins a new count (a new drain or batch)
    pause.start()
    now[0] = 5_099
    pause()
    assert yields == [1_100, 1_200]



def test_the_yield_keeps_the_gil() -> None:
    """Another Python thread must not run while one yields: the yield is a hint to the CPU
    scheduler, not a hand-over of the GIL (see the module's docstring)."""
    import threading

    ran_during: list[int] = []
    flag = [0]
    stop = threading.Event()

    def other() -> None:
        while not stop.is_set():
            flag[0] += 1

    t = threading.Thread(target=other, daemon=True)
    t.start()
    try:
        while flag[0] == 0:  # the other thread is running
            time.sleep(0.001)
        for _ in range(200):
            before = flag[0]
            yielding.sched_yield()
            ran_during.append(flag[0] - before)
    finally:
        stop.set()
        t.join()
    assert ran_during == [0] * 200


def test_due_says_when_the_time_is_up_and_yields_only_while_yielding_is_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain tells its backlog where ``due()`` is true (hostagent.probes.ring.Pacer): every
    ``after_ns`` whether or not the yields themselves are off (nice <= 0 at cpu_policy normal)."""
    now, yields = _fake_clock(monkeypatch)
    pause = CpuYield(after_ns=100)
    pause.start()
    now[0] = 1_099
    assert pause.due() is False
    now[0] = 1_100
    assert pause.due() is True and yields == [1_100]
    monkeypatch.setattr(yielding, "_enabled", [False])
    now[0] = 1_150
    assert pause.due() is False
    now[0] = 1_200
    assert pause.due() is True and yields == [1_100]  # due, and no yield
    now[0] = 1_250  # counted from there
    assert pause.due() is False
