"""CpuYield: sched_yield() only once its time is up, counted from start() or the last yield."""

from __future__ import annotations

import pytest

from hostagent import yielding
from hostagent.yielding import CpuYield


def test_yields_once_the_time_is_up_then_counts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000]
    yields: list[int] = []
    monkeypatch.setattr(yielding.time, "monotonic_ns", lambda: now[0])
    monkeypatch.setattr(yielding.os, "sched_yield", lambda: yields.append(now[0]))
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

