"""Handing the CPU back in the middle of long work, so that the agent never holds up an app.

Why: under EEVDF (Linux 6.6+) a thread that slept keeps a claim to the CPU when it wakes, and
the scheduler only weighs it again at the next tick (4 ms at HZ=250) or wake-up on that CPU. A
burst of the agent's work (a 10 ms ring's worth of records, an export batch being encoded: 1.5-3
ms at 4k req/s) therefore kept a runnable nice-0 process off its CPU until the tick, whatever
the agent's nice (perf sched: a load generator runnable for 2.9 ms behind the poll thread; under
Flask the p99 went from ~1.3 to ~4.5 ms). ``sched_yield()`` makes the scheduler weigh the thread
at once: a task that is waiting runs, and a thread alone on its CPU goes on without a switch.

The yield keeps the GIL (libc's sched_yield called through ``ctypes.PyDLL``, which does not
release it; ``os.sched_yield`` does): it is a hint to the CPU scheduler, not a hand-over between
the agent's threads. Released, each yield of the export thread let the busy poll thread take the
GIL for up to a switch interval (5 ms): the export queue overflowed at 15k req/s (the poll
thread's yields could hand the GIL to the export thread the same way).
"""

from __future__ import annotations

import ctypes
import os
import time
from typing import Callable

YIELD_AFTER_NS = 250_000  # the longest the agent keeps a CPU from a waiting app, give or take a step


def _gil_keeping_yield() -> Callable[[], object]:
    try:
        fn = ctypes.PyDLL(None).sched_yield
    except (OSError, AttributeError):  # no libc symbol to be had: the GIL-releasing one
        return os.sched_yield
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn  # type: ignore[no-any-return]


sched_yield = _gil_keeping_yield()

# Off when the agent runs at nice <= 0 with cpu_policy normal (hostagent.priority.set_priority):
# there it is meant to compete at equal weight, and yielding every 250 us would cost it that
# weight (a busy thread at nice 0 beside a busy nice-0 process: 50% of the CPU without the yields,
# 17% with them; at nice 10 it keeps its 9.7% once the yields are 500 us apart, and drops to 4% at
# 250 us).
_enabled = [True]


def set_enabled(on: bool) -> None:
    _enabled[0] = on


class CpuYield:
    """``pause()`` between pieces of work: sched_yield() once ``after_ns`` have passed since
    ``start()`` or the last yield."""

    __slots__ = ("after_ns", "since")  # (compiled: setup.py's COMPILED, called per drain step)

    def __init__(self, after_ns: int = YIELD_AFTER_NS) -> None:
        self.after_ns = after_ns
        self.since = 0

    def start(self) -> None:
        self.since = time.monotonic_ns()

    def __call__(self) -> None:
        self.due()

    def due(self) -> bool:
        """Whether ``after_ns`` have passed since ``start()`` or the last time this said so; then
        the CPU is handed back (sched_yield, unless yielding is off) and the count starts again.
        A drain does its own periodic work at these points (hostagent.probes.ring.Pacer)."""
        now = time.monotonic_ns()
        if now - self.since < self.after_ns:
            return False
        if _enabled[0]:
            sched_yield()
            now = time.monotonic_ns()
        self.since = now
        return True
