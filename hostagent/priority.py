"""The agent's CPU priority: under contention the traced applications come first.

An observability agent that competes with the workload at equal weight takes CPU from the very
applications it measures (bench/README: Flask under gunicorn lost a third of its throughput to
an agent at nice 0, a sixth at nice 10). Once the agent is READY every thread gets
``[agent] nice`` and ``[agent] cpu_policy``:

- ``idle`` (the default): SCHED_IDLE. The agent runs on CPU time no application wants: an
  application thread that wakes on a CPU where the agent runs takes it at once, and beside a busy
  application the agent gets ~0.3% of that CPU instead of the ~10% a nice-10 thread keeps
  (side runs here, alternated: Flask under gunicorn 4,668 req/s against 4,056 at nice 10, nginx
  at saturation 73.2k against 67.7k; bench/README, twelfth round). It is not starved: on a
  saturated host a SCHED_IDLE thread still runs at least every 30 ms beside one busy thread per
  CPU, every 0.3 s beside four (measured here; the poll loop's heartbeat keeps the watchdog fed;
  on a shared machine whose load was ~9, gaps of 2.7 s and 0.15% of a CPU),
  and what it cannot process in time is dropped in the kernel and counted
  (``kernel_ringbuf_full``), never lost silently.
  A floor keeps it from falling behind for good (``IdleGuard``): while the ring is more than half
  unread when a drain begins or between its steps, every thread runs at SCHED_OTHER at ``nice``;
  two seconds after the ring is back under an eighth with nothing waiting a second (up to a minute
  when raised again within one), SCHED_IDLE again. (Side runs here: two rounds of Flask under
  gunicorn in about thirty lost 19k and 39k records at SCHED_IDLE alone, counted, when the idle
  time on both busy CPUs ran short for longer than the ring lasts.) A second floor
  (``hostagent.starvation``) raises them the same way once work has waited a second: the oldest
  unread event, the poll loop's last beat, spans due for export. At a low call rate the ring never
  gets half full, and at ~0.3% of a CPU a curl's span reached the collector 20-58 s late and
  ``hostagentctl status`` took seconds; the poll loop cannot notice while it does not run, so a
  thread kept at SCHED_OTHER (``keep_normal_here``) checks four times a second; the same calm rule
  lowers them again. Raising threads that have nothing to do costs nothing: they sleep. The admin
  API's threads stay at SCHED_OTHER too (they run only while a person waits for hostagentctl).
  These threads are named ``steady-<role>`` for the kernel (``ps -L``). The second is
  ``[agent] starved_after_ms`` (default 1000; 0 turns this floor off). Leaving SCHED_IDLE needs
  CAP_SYS_NICE (the unit grants it); without it the guard says so once and the agent stays at
  SCHED_IDLE.
- ``normal``: SCHED_OTHER at ``nice``: the agent keeps its weight's share of a busy CPU (nice 10:
  ~10% beside one busy nice-0 thread; 0: equal weight), for hosts where spans matter more than
  the last percent of the applications' throughput.

On an idle or partly idle host neither changes anything: priorities only matter when a CPU has
more runnable threads than it can serve.

Linux keeps the nice value and the policy per thread (``setpriority(PRIO_PROCESS, tid)``,
``sched_setscheduler(tid)``), and a new thread starts with its creator's: every thread that
exists is set here, and the threads started later (gRPC's, the exporter's retries) inherit them.
The bcc compile at start-up runs before this, at the priority the agent was started with, so
READY is not delayed on a busy host. Below the applications' priority the agent's long bursts
also hand the CPU back every 250 us (``hostagent.yielding``): a nice value weighs the CPU's share,
not how long a woken thread keeps it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hostagent.yielding import set_enabled as set_yielding

NICE_MIN, NICE_MAX = -20, 19
# [agent] cpu_policy -> the Linux scheduling policy
POLICIES = {"idle": os.SCHED_IDLE, "normal": os.SCHED_OTHER}
POLICY_NAMES = {v: k for k, v in POLICIES.items()}


def thread_ids(proc: Path = Path("/proc/self/task")) -> list[int]:
    try:
        return sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    except OSError:
        return [os.getpid()]


# Threads that keep SCHED_OTHER whatever the policy (hostagent.starvation's watch: it only reads
# timestamps, and at SCHED_IDLE it would be as starved as what it watches)
_STEADY: set[int] = set()


STEADY_NAME_PREFIX = "steady-"


def keep_normal(tid: int, role: str) -> str:
    """Thread ``tid`` to SCHED_OTHER (at its nice value) for good: later set_priority calls change
    its nice only. Its name for the kernel (``ps -L``, ``top -H``) becomes ``steady-<role>``, so
    that whoever reads the threads' policies knows which keep SCHED_OTHER on purpose. Returns ""
    or why it stays where it is (leaving SCHED_IDLE needs CAP_SYS_NICE)."""
    _STEADY.add(tid)
    try:
        Path(f"/proc/self/task/{tid}/comm").write_text((STEADY_NAME_PREFIX + role)[:15])
    except OSError:
        pass  # a name only
    try:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    except ProcessLookupError:
        _STEADY.discard(tid)
        return "the thread is gone"
    except PermissionError as e:
        return f"{e.strerror or e} (leaving SCHED_IDLE needs CAP_SYS_NICE)"
    return ""


def keep_normal_here(role: str) -> str:
    """keep_normal for the calling thread."""
    return keep_normal(threading.get_native_id(), role)


def release_here() -> None:
    """This thread no longer kept at SCHED_OTHER (it is ending; its id may be reused)."""
    _STEADY.discard(threading.get_native_id())


# Other processes whose threads take the agent's priority with its own (the export process,
# hostagent.export.process: a part of the agent, raised and lowered with it)
_FOLLOWERS: set[int] = set()


def follow(pid: int) -> None:
    _FOLLOWERS.add(pid)


def unfollow(pid: int) -> None:
    _FOLLOWERS.discard(pid)


def _all_threads() -> list[int]:
    tids = thread_ids()
    for pid in list(_FOLLOWERS):
        try:
            tids.extend(int(p.name) for p in Path(f"/proc/{pid}/task").iterdir() if p.name.isdigit())
        except OSError:
            continue  # gone: its successor is followed when it starts
    return tids


def _each_thread(apply: Callable[[int], None], skip: frozenset[int] = frozenset()) -> tuple[int, str]:
    """Calls ``apply(tid)`` on every thread (the followers' too) but ``skip``; returns (threads done,
    why it stopped or "")."""
    done = 0
    for tid in _all_threads():
        if tid in skip:
            continue
        try:
            apply(tid)
            done += 1
        except ProcessLookupError:  # the thread exited meanwhile
            continue
        except PermissionError as e:
            return done, e.strerror or str(e)
    return done, ""


def set_priority(nice: int, policy: str = "normal") -> str:
    """Sets ``nice`` and ``policy`` on every thread of this process; returns a sentence for the log.

    Raising the priority (a nice value below the current one, or SCHED_IDLE back to normal) needs
    CAP_SYS_NICE; without it the threads keep what they have and the sentence says why."""
    if not NICE_MIN <= nice <= NICE_MAX:
        raise ValueError(f"nice must be from {NICE_MIN} to {NICE_MAX}, got {nice}")
    if policy not in POLICIES:
        raise ValueError(f"cpu_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    # read on the main thread: the caller may be a steady one (keep_normal_here)
    main = os.getpid()
    current = os.getpriority(os.PRIO_PROCESS, main)
    done, refused = _each_thread(lambda tid: os.setpriority(os.PRIO_PROCESS, tid, nice))
    if refused:
        why = ("raising priority needs CAP_SYS_NICE" if nice < current
               else "setpriority refused: a seccomp filter without setpriority?")
        refused = f"nice {nice} not applied: {refused} ({why})"
    was = current_policy(main)
    _, policy_refused = _each_thread(
        lambda tid: os.sched_setscheduler(tid, POLICIES[policy], os.sched_param(0)), frozenset(_STEADY))
    if policy_refused:
        why = ("leaving SCHED_IDLE needs CAP_SYS_NICE" if was == "idle"
               else "sched_setscheduler refused: a seccomp filter without it?")
        policy_refused = f"cpu_policy {policy} not applied: {policy_refused} ({why})"
    # the other half of "the applications first" (hostagent.yielding), by what the threads have:
    # a refused value leaves them at their own
    now_nice, now_policy = os.getpriority(os.PRIO_PROCESS, main), current_policy(main)
    set_yielding(now_nice > 0 or now_policy == "idle")
    problems = "; ".join(p for p in (refused, policy_refused) if p)
    if problems:
        return f"{problems}; threads stay at nice {now_nice}, cpu_policy {now_policy}"
    meaning = ("only CPU time no application wants" if policy == "idle"
               else "the traced applications come first under CPU contention" if nice > 0
               else "equal weight with the applications" if nice == 0 else "ahead of the applications")
    return f"nice {nice}, cpu_policy {policy} on {done} threads ({meaning})"


def current_policy(tid: int = 0) -> str:
    """The [agent] cpu_policy name of thread ``tid`` (0: this one; another Linux policy by its number)."""
    value = os.sched_getscheduler(tid)
    return POLICY_NAMES.get(value, str(value))


def main_thread_policy() -> str:
    """The policy of the main thread (the poll loop's), whichever thread asks."""
    return current_policy(os.getpid())


class IdleGuard:
    """cpu_policy idle with a floor. ``observe(backlog)``, before each drain and between its steps,
    raises every thread to SCHED_OTHER at ``nice`` once the ring is ``raise_at`` unread;
    ``starved(what, waited_s)``, from hostagent.starvation's watch, raises them once work has
    waited ``starved_after_s``. Either way they go back to SCHED_IDLE after ``calm_s`` below
    ``calm_below`` with nothing waiting that long (seen by observe: the poll loop runs again).
    Each returns a sentence for the log when it changed something, else None. The poll loop and
    the watch call it: a lock keeps their decisions apart."""

    # Raised again within a minute of going back: the host stays busy, so the next calm must last
    # twice as long (at most a minute): under lasting contention the agent changes policy about
    # once a minute instead of every few seconds.
    AGAIN_WITHIN_S = 60.0
    CALM_MAX_S = 60.0

    def __init__(self, nice: int, apply: Callable[[int, str], str] = set_priority,
                 policy_now: Callable[[], str] = main_thread_policy, clock: Callable[[], float] = time.monotonic,
                 raise_at: float = 0.5, calm_below: float = 0.125, calm_s: float = 2.0,
                 starved_after_s: float = 1.0) -> None:
        self.nice = nice
        self._apply, self._policy_now, self._clock = apply, policy_now, clock
        self.raise_at, self.calm_below, self.calm_s = raise_at, calm_below, calm_s
        self.starved_after_s = starved_after_s
        self.base_calm_s = calm_s
        self.raised = False
        self.refused = False  # leaving SCHED_IDLE was refused once: not asked again
        self.held = False  # kept at SCHED_IDLE while hopelessly behind (hostagent.overload)
        self.times_raised = 0
        self.times_starved = 0  # of times_raised, by starved()
        self._calm_since: float | None = None
        self._lowered_at: float | None = None
        self._waited_s = 0.0  # the watch's last longest wait (starved)
        self._lock = threading.Lock()

    def observe(self, backlog: float) -> str | None:
        with self._lock:
            if self.refused or self.held:
                return None
            if not self.raised:
                if backlog < self.raise_at:
                    return None
                return self._raise(f"behind ({backlog:.0%} of the ring unread)",
                                   f"the ring is {backlog:.0%} unread")
            return self._maybe_lower(backlog)

    def starved(self, what: str, waited_s: float) -> str | None:
        """``what`` has waited ``waited_s`` for the agent's threads (the oldest unread event, the
        poll loop's last beat, spans due for export): at idle beside busy threads they get almost
        no CPU at a rate too low to fill the ring, and the answer comes tens of seconds late."""
        with self._lock:
            if self.starved_after_s <= 0:  # [agent] starved_after_ms = 0: this floor is off
                return None
            self._waited_s = waited_s  # raised already: the calm waits for it too
            if self.refused or self.held or self.raised or waited_s < self.starved_after_s:
                return None
            said = self._raise(f"starved ({what} waited {waited_s:.1f} s)", f"{what} waited {waited_s:.1f} s")
            if self.raised:
                self.times_starved += 1
            return said

    def stopping(self) -> str | None:
        """At stop: SCHED_OTHER at ``nice`` at once, for good. A stop is bounded (a few seconds: the
        last drain, the flush) and must end within it on a busy host too (systemd's stop timeout);
        at idle beside busy threads it took more than 30 s once. The watch cannot judge a stop:
        the poll loop no longer beats, and the flush's wait for the collector would read as
        starvation."""
        with self._lock:
            if self.refused or self.raised:
                return None
            sentence = self._apply(self.nice, "normal")
            if self._policy_now() == "idle":
                self.refused = True
                return f"stopping at SCHED_IDLE: the agent cannot leave it ({sentence})"
            self.raised, self._calm_since = True, None
            return f"stopping: {sentence} until the end"

    def _raise(self, why: str, refused_why: str) -> str:
        sentence = self._apply(self.nice, "normal")
        if self._policy_now() == "idle":
            self.refused = True
            return (f"{refused_why} but the agent cannot leave SCHED_IDLE "
                    f"({sentence}); it stays there and what it cannot keep up with is dropped, counted")
        self.raised, self._calm_since = True, None
        self.times_raised += 1
        now = self._clock()
        again = self._lowered_at is not None and now - self._lowered_at < self.AGAIN_WITHIN_S
        self.calm_s = min(self.calm_s * 2, self.CALM_MAX_S) if again else self.base_calm_s
        return f"{why}: {sentence}; back at idle after {self.calm_s:g} s calm"

    def _maybe_lower(self, backlog: float) -> str | None:
        # Both: a ring an eighth full can still hold records seconds old when the agent reads
        # about as fast as they come (it went back to idle with its oldest record 8 s old).
        if backlog >= self.calm_below or 0 < self.starved_after_s <= self._waited_s:
            self._calm_since = None
            return None
        now = self._clock()
        if self._calm_since is None:
            self._calm_since = now
            return None
        if now - self._calm_since < self.calm_s:
            return None
        self.raised = False
        self._lowered_at = now
        return f"caught up: {self._apply(self.nice, 'idle')}"

    @property
    def full_effort(self) -> bool:
        """At the priority it takes when behind (or cannot leave SCHED_IDLE: idle is all it has)."""
        return self.raised or self.refused

    def hold(self, on: bool) -> str | None:
        """While on, the floor does not raise; turned on while raised, it lowers at once (a sentence
        for the log then). The agent is too far behind for a raise to help (hostagent.overload)."""
        with self._lock:
            if on == self.held:
                return None
            self.held = on
            self._calm_since = None
            if on and self.raised:
                self.raised = False
                self._lowered_at = self._clock()
                return f"overloaded, not competing: {self._apply(self.nice, 'idle')}"
            return None
