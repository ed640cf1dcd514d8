"""The daemon's drain-progress hook: a long drain keeps the watchdog fed and feeds the idle floor,
which the status line shows while it holds the agent up."""

from __future__ import annotations

import time

from hostagent.config import Config
from hostagent.daemon import Agent


class _RecordingGuard:
    refused = False
    raised = False
    nice = 10
    full_effort = True
    held = False

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, backlog: float) -> str | None:
        self.seen.append(backlog)
        return None

    def hold(self, on: bool) -> str | None:
        self.held = on
        return None


class _CountingCapture:
    """Stands in for assembly.Capture: the counters the backoff reads, set by the test."""

    def __init__(self) -> None:
        self.read = self.dropped = 0

    def records_read(self) -> int:
        return self.read

    def drop_counts(self) -> dict[str, int]:
        return {"kernel_ringbuf_full": self.dropped}


def test_a_drain_in_progress_is_the_loop_alive_and_the_floor_sees_each_backlog() -> None:
    agent = Agent(Config())
    agent.heartbeat = time.monotonic() - 60  # a drain that began a minute ago on a starved CPU
    assert not agent.alive()
    guard = _RecordingGuard()
    agent.idle_guard = guard
    agent._drain_progress(0.75)
    assert agent.alive()
    agent._drain_progress(0.5)
    assert guard.seen == [0.75, 0.5]


def test_without_a_floor_the_progress_still_counts_as_alive() -> None:
    agent = Agent(Config())
    agent.heartbeat = time.monotonic() - 60
    agent.idle_guard = None  # cpu_policy normal
    agent._drain_progress(0.9)
    assert agent.alive()


def test_the_status_line_says_while_the_floor_holds_the_agent_up() -> None:
    agent = Agent(Config())
    guard = _RecordingGuard()
    agent.idle_guard = guard
    assert agent.status_line() == "0 probes attached, exporting to nowhere (console only), 0 dropped"
    guard.raised = True
    assert agent.status_line() == ("0 probes attached, exporting to nowhere (console only), 0 dropped, "
                                   "behind: at nice 10 until drained")


def test_hopelessly_behind_the_loop_rests_holds_the_floor_and_the_status_line_says_so() -> None:
    from hostagent.overload import OverloadBackoff

    agent = Agent(Config())
    guard, capture = _RecordingGuard(), _CountingCapture()
    agent.idle_guard, agent.capture = guard, capture
    now = time.monotonic()
    agent.backoff = backoff = OverloadBackoff(0.2, now)
    agent._pace(backoff, now, 0.0)  # the baseline
    for _ in range(3):  # three seconds losing 95% at full effort
        now += 1.0
        capture.read += 8_000
        capture.dropped += 142_000
        agent._pace(backoff, now, 0.0)
    assert backoff.resting and guard.held
    assert agent.status_line().endswith(", overloaded: working 20% of the time")
    agent.heartbeat = 0.0
    started = time.monotonic()
    agent._pace(backoff, now + 0.1, 0.01)  # a burst of 10 ms: 40 ms of rest
    rested = time.monotonic() - started
    assert 0.035 <= rested < 0.5 and agent.alive()
    agent.stop_requested = True
    started = time.monotonic()
    agent._pace(backoff, now + 0.2, 1.0)  # a stop asked for: no rest
    assert time.monotonic() - started < 0.05
    for _ in range(3):  # the load is gone
        now += 1.0
        agent._pace(backoff, now, 0.0)
    assert not backoff.resting and not guard.held


def test_the_cpu_effort_in_words_for_hostagentctl_status() -> None:
    from hostagent.overload import OverloadBackoff

    agent = Agent(Config())
    agent.idle_guard = None
    assert agent.cpu_effort() == "normal (nice 10)"  # cpu_policy normal
    guard = _RecordingGuard()
    agent.idle_guard = guard
    assert agent.cpu_effort() == "idle (SCHED_IDLE)"
    guard.raised = True
    assert agent.cpu_effort() == "raised: behind, at nice 10 until drained"
    guard.raised, guard.refused = False, True
    assert agent.cpu_effort() == "idle (SCHED_IDLE): cannot leave it (no CAP_SYS_NICE)"
    agent.backoff = backoff = OverloadBackoff(0.2, 0.0)
    backoff.observe(0.0, 0, 0)
    for i in range(1, 5):
        backoff.observe(float(i), 8_000 * i, 142_000 * i)
    assert agent.cpu_effort() == "backed off: overloaded, working 20% of the time (for 1 s in all)"
