"""The idle policy's second floor: work that waits more than a second raises the agent.

At SCHED_IDLE beside one busy nice-0 thread per CPU the agent gets ~0.3% of a CPU. At a low
event rate the ring never gets half full, so ``IdleGuard.observe`` never raises it, and every
step of a call's way (the poll loop, the GIL passed between idle threads, the export) waits for
scraps: a curl's span reached the collector 20-58 s late, ``hostagentctl status`` took seconds
(the acceptance runs; bench/README, nineteenth round). The poll loop cannot notice while it is
not running, so ``StarvationWatch`` is a thread kept at SCHED_OTHER (``keep_normal_here``) that
wakes every quarter second, reads how long the oldest waiting work has waited, and past
``IdleGuard.starved_after_s`` raises every other thread; the guard's calm rule lowers them again.
It reads timestamps and two ring positions only: a few microseconds per wake, and the per-span
path is untouched.

What "waited" means (``Agent.longest_wait``): the oldest unread record in the ring (``RingAge``,
from the producer position the watch samples: no record is read), the poll loop's last beat
(a reload or an attach that does not finish is starved too; a stop is raised at once instead,
``IdleGuard.stopping``, and the watch ends with the poll loop), and spans due for export
that the export thread has not picked up. Its Python needs the GIL: when a starved idle thread
holds it, the watch waits until that thread is scheduled again (tens of ms beside one busy
thread per CPU), which is still far inside the second.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Optional

from hostagent.priority import keep_normal_here, release_here

log = logging.getLogger("hostagent")

WATCH_EVERY_S = 0.25
MAX_SAMPLES = 256  # a ring whose reader never moves: the oldest samples are the ones that count


class RingAge:
    """How long the oldest unread record of a ring has waited, at the resolution of the samples.

    ``sample(now, producer, consumer)`` notes that every record before ``producer`` existed at
    ``now``; the oldest sample whose position is still ahead of the consumer says since when
    unread records have been waiting (at least that long: up to one sample interval more)."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, producer: int, consumer: int) -> float:
        samples = self._samples
        while samples and samples[0][1] <= consumer:
            samples.popleft()  # read since: those records no longer wait
        if producer > consumer and (not samples or samples[-1][1] != producer):
            if len(samples) >= MAX_SAMPLES:
                samples.pop()  # keep the oldest: it bounds the age
            samples.append((now, producer))
        return now - samples[0][0] if samples else 0.0


class StarvationWatch(threading.Thread):
    """Every ``every_s``: ``longest_wait()`` -> (what, seconds); ``starved(what, seconds)`` decides
    (IdleGuard.starved, or nothing when the agent runs at cpu_policy normal) and says what it did."""

    def __init__(self, longest_wait: Callable[[], tuple[str, float]],
                 starved: Callable[[str, float], Optional[str]], every_s: float = WATCH_EVERY_S) -> None:
        super().__init__(name="starvation-watch", daemon=True)
        self._longest_wait, self._starved, self._every_s = longest_wait, starved, every_s
        self._stop = threading.Event()
        self._failed = False  # a check failed: said once, not four times a second

    def run(self) -> None:
        refused = keep_normal_here("watch")
        if refused:
            log.warning("cpu priority: the starvation watch stays at the agent's policy: %s", refused)
        try:
            while not self._stop.wait(self._every_s):
                self.check()
        finally:
            release_here()

    def check(self) -> None:
        try:
            what, waited = self._longest_wait()
            said = self._starved(what, waited)
        except Exception:  # the watch must outlive a bad read; said once, not raised
            if not self._failed:
                self._failed = True
                log.exception("cpu priority: the starvation watch failed a check")
            return
        if said:
            log.info("cpu priority: %s", said)

    def stop(self) -> None:
        self._stop.set()
