"""Backing off when the agent cannot keep up at its full effort (hopeless overload).

Why (bench/README, fourteenth round): nginx at saturation on the bench machine kept 0.92 of its
throughput beside our programs alone (the agent's process stopped: every call shed in the kernel)
but 0.75 beside the agent at work, which turned ~5% of the calls into spans there; working a
quarter of the time (stopped and continued from outside) it kept 0.88. A SCHED_IDLE busy loop
with no BPF at all, on the load generator's CPU, cost nginx 18%: whatever runs in an app's idle
gaps makes each wake-up of that app a preemption (a reschedule IPI, a VM exit here) instead of a
CPU leaving its idle loop. So when most of what arrives is dropped even with the agent raised to
its full effort, its work buys a few percent of the calls with a large share of the apps'
throughput. Then it works in short bursts (BURST_S of draining) and rests between them, so that it
works ``duty`` of the time, at SCHED_IDLE; the calls it cannot take are shed in the kernel and
counted (kernel_ringbuf_full), as before.

    NORMAL   -- ENTER_WINDOWS windows in a row at full effort that lost, together, >= ENTER_LOSS
                of what arrived, or one at full effort with loss >= EVIDENT_LOSS -->  BACKED_OFF
    BACKED_OFF -- EXIT_WINDOWS windows in a row with arrivals under half of what they were
                  when it backed off -->  NORMAL
    BACKED_OFF -- every PROBE_EVERY_S -->  PROBING (full effort again)
    PROBING  -- the same as from NORMAL, all windows at full effort -->  BACKED_OFF
             -- any of them under ENTER_LOSS (the host has room again) -->  NORMAL

When it is evident (EVIDENT_LOSS: arrivals ten times what the agent takes at full effort), one window
decides: nginx at saturation on the bench machine loses 93-95% of its calls at full effort, and the
three windows of 1 s the agent took to see it were a third of the bench's 10 s round at 0.65-0.70
of plain throughput, against 0.86 once backed off (the agent stopped: 0.865; bench/README,
twenty-fourth round). A one-window burst taken for a lasting overload costs EXIT_WINDOWS windows
at the duty: the next windows' arrivals, under half of the burst's, take it back to full effort;
and what stays over half of a burst ten times the agent's capacity is over ENTER_LOSS, hopeless by
the slow rule too. One window of halved arrivals is not enough: on the bench machine the load
pauses for a few hundred milliseconds now and then (the VM, or the load generator stopped), and
each such pause took the agent back to full effort, to back off again a window later with its
detached programs attached and detached once more in between (redis 0.53-0.79 of plain in the side
runs where that happened, bench/README twenty-ninth round).

An evident overload is seen before its window ends: from QUICK_S (a quarter window) on, the loop
reads the counters at every turn, and a window already past EVIDENT_LOSS at full effort with at
least QUICK_MIN_DROPPED calls dropped decides then (nginx at saturation: 0.2-0.3 s after READY
instead of 0.66-0.73 s, at ~0.65 of plain meanwhile). A part window not at full effort (the floor
not yet raised) starts the next window where it ends, so the evident part is not diluted by it.
Anything less evident waits for the whole window, as before.

The slow rule weighs its windows together (the drops of the last ENTER_WINDOWS over what arrived in
them) rather than asking each to be over ENTER_LOSS: at full effort under pgbench on the bench machine
the windows' loss swung 65-89% from one to the next (a drain's burst caught in one window or the
next) around a mean of ~80%, and each window under three quarters started the count again: the agent
backed off 3.3 s, 6.4 s, 7.5 s or not at all into a 10 s round, capturing at full cost meanwhile
(pgbench 0.83-0.94 of plain between rounds; bench/README, thirtieth round).

A window is WINDOW_S of the loop; its loss is the kernel's ring-full drops over what arrived
(records read + dropped). Full effort: the agent at the priority it would take when behind
(cpu_policy normal, or idle with its floor raised or refused). Pure logic: the daemon feeds it
counters and a clock, drains for at most ``burst_s()`` (at full effort too: a window closes only
when the loop comes round) and rests ``rest_after(burst)`` after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

WINDOW_S = 0.5
QUICK_S = WINDOW_S / 4  # an evident overload is looked for from here on in a window
QUICK_MIN_DROPPED = 10_000  # and decided early only on this many drops (80k/s over QUICK_S)
ENTER_WINDOWS = 6  # 3 s of windows that lost, together, over three quarters
ENTER_LOSS = 0.75  # more than three quarters dropped: arrivals over four times what it can take
EVIDENT_LOSS = 0.9  # nine tenths dropped at full effort: one window is enough
EXIT_ARRIVALS = 0.5  # of the arrival rate it backed off at
EXIT_WINDOWS = 2  # in a row: a pause of the load shorter than a window does not end the backoff
PROBE_EVERY_S = 60.0
BURST_S = 0.025  # wall time of one drain while backed off (25 ms on, 100 ms off at a duty of 0.2)
# One drain at full effort returns to the loop within this (it goes on at once in the next turn):
# far behind on a starved CPU, draining what an 8 MiB ring held (~40k records) took seconds, and
# a window closes only when the loop comes round, so three windows of 1 s took 5-9 s instead of 3.
TURN_S = WINDOW_S / 4
MAX_REST_S = 2.0  # one rest at most (the poll loop beats between rests: watchdog, stop requests)

NORMAL, BACKED_OFF, PROBING = "normal", "backed off", "probing"


@dataclass(frozen=True)
class Window:
    seconds: float
    read: int  # records the agent read from the ring
    dropped: int  # calls the kernel could not put in the ring
    full_effort: bool

    @property
    def arrivals_per_s(self) -> float:
        return (self.read + self.dropped) / self.seconds if self.seconds > 0 else 0.0

    @property
    def loss(self) -> float:
        total = self.read + self.dropped
        return self.dropped / total if total else 0.0


def _loss_of(windows: Sequence[Window]) -> float:
    """What the windows dropped of what arrived in them, together (each weighs what arrived in it)."""
    dropped = sum(x.dropped for x in windows)
    total = dropped + sum(x.read for x in windows)
    return dropped / total if total else 0.0


class OverloadBackoff:
    """From the poll loop: ``note_effort(full)`` on every turn; when ``due(now)``,
    ``observe(now, read_total, dropped_total)`` (a sentence for the log on a change of state);
    ``burst_s()`` as the drain's time budget; ``rest_after(burst_s)`` after it."""

    def __init__(self, duty: float, now: float) -> None:
        if not 0.0 < duty <= 1.0:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.duty = duty
        self.state = NORMAL
        self._windows: deque[Window] = deque(maxlen=ENTER_WINDOWS)
        self._start = now
        self._read = self._dropped = -1  # the first observe() sets the baseline
        self._full = True  # every turn of the loop in the current window was at full effort
        self._entry_arrivals = 0.0
        self._low_windows = 0  # backed off: windows in a row with arrivals under EXIT_ARRIVALS
        self._next_probe = 0.0
        self.times_backed_off = 0
        self.backed_off_s = 0.0  # time spent backed off, for status
        self.last_window: Optional[Window] = None  # the last window decided on (the daemon's debug log)

    @property
    def resting(self) -> bool:
        return self.state == BACKED_OFF

    def note_effort(self, full: bool) -> None:
        """A window is at full effort only if every turn of the loop in it was."""
        if not full:
            self._full = False

    def due(self, now: float) -> bool:
        """The counters are to be read (only then: the kernel's is a map lookup): a window has
        passed, or, unless backed off, QUICK_S of one (an evident overload is decided early)."""
        if self.duty >= 1.0:
            return False
        return self._read < 0 or now - self._start >= (WINDOW_S if self.state == BACKED_OFF else QUICK_S)

    def observe(self, now: float, read_total: int, dropped_total: int) -> Optional[str]:
        if self._read < 0:
            self._start, self._read, self._dropped, self._full = now, read_total, dropped_total, True
            return None
        elapsed = now - self._start
        if self.duty >= 1.0:
            return None
        w = Window(elapsed, max(read_total - self._read, 0), max(dropped_total - self._dropped, 0), self._full)
        if elapsed < WINDOW_S:
            if self.state == BACKED_OFF or elapsed < QUICK_S:
                return None
            if w.full_effort and (w.loss < EVIDENT_LOSS or w.dropped < QUICK_MIN_DROPPED):
                return None  # not evident (yet): the whole window decides
            # evident at full effort: decided now; not at full effort: the next window starts here
        self._start, self._read, self._dropped, self._full = now, read_total, dropped_total, True
        if self.state == BACKED_OFF:
            self.backed_off_s += w.seconds
        self.last_window = w
        return self._step(now, w)

    def _step(self, now: float, w: Window) -> Optional[str]:
        if self.state == BACKED_OFF:
            low = w.arrivals_per_s < self._entry_arrivals * EXIT_ARRIVALS
            self._low_windows = self._low_windows + 1 if low else 0
            if self._low_windows >= EXIT_WINDOWS:
                self.state = NORMAL
                self._windows.clear()
                return (f"back to full effort: arrivals fell to {w.arrivals_per_s:,.0f}/s "
                        f"(from {self._entry_arrivals:,.0f}/s when it backed off)")
            if now >= self._next_probe:
                self.state = PROBING
                self._windows.clear()
            return None
        if not w.full_effort:
            self._windows.clear()
            return None
        if self.state == PROBING and w.loss < ENTER_LOSS:
            self.state = NORMAL
            self._windows.clear()
            return f"back to full effort: it keeps up again ({w.loss:.0%} of the calls dropped)"
        self._windows.append(w)
        evident = w.loss >= EVIDENT_LOSS
        if not evident and (len(self._windows) < ENTER_WINDOWS or _loss_of(self._windows) < ENTER_LOSS):
            return None
        windows = [w] if evident else list(self._windows)
        self._windows.clear()
        arrivals = sum(x.arrivals_per_s for x in windows) / len(windows)
        loss = _loss_of(windows)
        probing = self.state == PROBING
        self.state = BACKED_OFF
        self._entry_arrivals = arrivals
        self._low_windows = 0
        self._next_probe = now + PROBE_EVERY_S
        if probing:
            return None  # still hopeless: rests on, as said when it backed off
        self.times_backed_off += 1
        return (f"overloaded: {loss:.0%} of the calls dropped at full effort ({arrivals:,.0f}/s arriving); "
                f"working {self.duty:.0%} of the time until arrivals halve "
                f"(full effort tried again every {PROBE_EVERY_S:g} s)")

    def burst_s(self) -> float:
        """How long the next drain may take: BURST_S while backed off, else TURN_S (the windows
        are measured on time however long the ring would take to drain)."""
        return BURST_S if self.state == BACKED_OFF else TURN_S

    def rest_after(self, burst_s: float) -> float:
        """Seconds to rest after a drain that took ``burst_s`` (wall time: what the agent would
        have spent on a CPU, had it been given one): none unless backed off."""
        if self.state != BACKED_OFF or burst_s <= 0:
            return 0.0
        return min(burst_s * (1.0 - self.duty) / self.duty, MAX_REST_S)
