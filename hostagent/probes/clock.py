"""Kernel timestamps (bpf_ktime_get_ns = CLOCK_MONOTONIC) to Unix nanoseconds."""

from __future__ import annotations

import time


class MonotonicClock:
    """Converts CLOCK_MONOTONIC ns to Unix ns with one offset.

    The offset is the minimum of several ``time_ns() - monotonic_ns()`` samples: a sample can
    only be too large (pre-empted between the two reads), so the smallest is the best. Call
    ``recalibrate()`` now and then: NTP slews the wall clock, the monotonic clock does not follow.
    """

    def __init__(self, samples: int = 16) -> None:
        self._samples = samples
        self.offset_ns = 0
        self.recalibrate()

    def recalibrate(self) -> int:
        best = None
        for _ in range(self._samples):
            mono = time.monotonic_ns()
            wall = time.time_ns()
            mono2 = time.monotonic_ns()
            # midpoint of the monotonic reads that bracket the wall read
            off = wall - (mono + mono2) // 2
            spread = mono2 - mono
            if best is None or spread < best[0]:
                best = (spread, off)
        assert best is not None
        self.offset_ns = best[1]
        return self.offset_ns

    def to_unix_ns(self, monotonic_ns: int) -> int:
        return monotonic_ns + self.offset_ns
