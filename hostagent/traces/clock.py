"""Kernel CLOCK_MONOTONIC nanoseconds -> Unix (CLOCK_REALTIME) nanoseconds.

The BPF side stamps events with ``bpf_ktime_get_ns()`` (CLOCK_MONOTONIC). Spans need Unix time.
The two clocks differ by an offset that only changes when the wall clock is stepped (NTP step,
``date -s``) or slewed; so we measure the offset once, keep it, and refresh it now and then.

Measuring: read realtime, monotonic, realtime back to back; the pair whose two realtime reads are
closest together bracketed the monotonic read most tightly, so its midpoint is the best estimate.
Taking the best of a few samples removes the outliers caused by preemption between the reads.
"""

from __future__ import annotations

import time

_SAMPLES = 5


def measure_offset_ns(samples: int = _SAMPLES) -> int:
    """Return realtime - monotonic in ns, from the most tightly bracketed of ``samples`` reads."""
    best_width = None
    best_offset = 0
    for _ in range(max(1, samples)):
        before = time.time_ns()
        mono = time.monotonic_ns()
        after = time.time_ns()
        width = after - before
        if best_width is None or width < best_width:
            best_width = width
            # The monotonic read happened somewhere between the two realtime reads.
            best_offset = (before + after) // 2 - mono
    return best_offset


class MonotonicToUnix:
    """Converts CLOCK_MONOTONIC ns to Unix ns with a cached offset.

    ``to_unix`` is on the hot path (two per span), so it is one addition; ``refresh`` re-measures
    (call it from a timer, e.g. every few seconds, so a stepped wall clock is followed).
    """

    __slots__ = ("offset_ns",)

    def __init__(self, offset_ns: int | None = None) -> None:
        # A fixed offset is accepted so tests can convert exactly.
        self.offset_ns = measure_offset_ns() if offset_ns is None else offset_ns

    def refresh(self) -> int:
        """Re-measure the offset; returns the new offset."""
        self.offset_ns = measure_offset_ns()
        return self.offset_ns

    def to_unix(self, monotonic_ns: int) -> int:
        return monotonic_ns + self.offset_ns
