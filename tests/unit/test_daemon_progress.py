"""The daemon's drain-progress hook: a long drain keeps the watchdog fed and feeds the idle floor,
which the status line shows while it holds the agent up."""

from __future__ import annotations

import logging
import time
import types

import pytest

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
        self.backed_off: list[bool] = []  # what set_backed_off was told, changes only

    def records_read(self) -> int:
        return self.read

    def set_backed_off(self, on: bool) -> None:
        if not self.backed_off or self.backed_off[-1] != on:
            self.backed_off.append(on)

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
    assert capture.backed_off == [False, True]  # the capture is told: its shed-time programs go
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
    assert capture.backed_off == [False, True, False]  # and back at full effort


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
    for i in range(1, 3):  # backed off after the first window (95% dropped), for 1 s in the second
        backoff.observe(float(i), 8_000 * i, 142_000 * i)
    assert agent.cpu_effort() == "backed off: overloaded, working 20% of the time (for 1 s in all)"


class _SlowDrainCapture(_CountingCapture):
    """A ring far behind on a starved CPU: each poll drains for its whole budget (or, without one,
    as long as the whole backlog would take); the clock is the test's."""

    def __init__(self, agent: Agent, backlog_s: float, polls: int) -> None:
        super().__init__()
        self.agent, self.backlog_s, self.polls = agent, backlog_s, polls
        self.calls: list[tuple[int, float | None]] = []

    def poll(self, timeout_ms: float, budget_s: float | None) -> int:
        self.calls.append((timeout_ms, budget_s))
        self.read += 1_000
        self.dropped += 30_000
        if len(self.calls) >= self.polls:
            self.agent.stop_requested = True
        return 1_000


def test_at_full_effort_a_drain_comes_back_within_a_quarter_window_and_goes_on_without_waiting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hostagent import daemon
    from hostagent.overload import BACKED_OFF, TURN_S, WINDOW_S, OverloadBackoff

    clock = [1000.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr(daemon, "time", types.SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep))
    agent = Agent(Config())
    capture = _SlowDrainCapture(agent, backlog_s=3.0, polls=6)

    def poll(timeout_ms: float, budget_s: float | None) -> int:
        clock[0] += min(budget_s if budget_s is not None else capture.backlog_s, capture.backlog_s)
        return _SlowDrainCapture.poll(capture, timeout_ms, budget_s)

    monkeypatch.setattr(capture, "poll", poll)
    agent.idle_guard, agent.capture = _RecordingGuard(), capture
    agent.backoff = backoff = OverloadBackoff(0.2, clock[0])
    monkeypatch.setattr(agent, "shutdown", lambda: None)
    assert agent.run() == 0
    # every drain at full effort is cut at a quarter window, and the next one does not wait
    first_backed_off = next(i for i, (_, budget) in enumerate(capture.calls) if budget != TURN_S)
    assert all(budget == TURN_S for _, budget in capture.calls[:first_backed_off])
    assert [t for t, _ in capture.calls[1:first_backed_off]] == [0] * (first_backed_off - 1)
    # so a window at full effort -- and the backoff, 97% dropped -- comes after ~WINDOW_S, not a
    # whole drain (3 s); evident, after a quarter of it. This fake's arrivals come per drain, not per
    # second: backed off, its rests make them look fallen, but never for two windows in a row, so over
    # its six drains it stays backed off (the clock is the test's: the count is exact; with one window
    # enough, before the twenty-ninth round, it came back and backed off again twice)
    assert backoff.times_backed_off == 1 and backoff.state == BACKED_OFF
    assert first_backed_off * TURN_S <= WINDOW_S + 2 * TURN_S


def test_each_window_of_the_overload_backoff_is_in_the_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    """What an SRE reads to see why the agent backed off (or did not): each window's counts and loss."""
    from hostagent.overload import OverloadBackoff

    agent = Agent(Config())
    guard, capture = _RecordingGuard(), _CountingCapture()
    agent.idle_guard, agent.capture = guard, capture
    now = time.monotonic()
    backoff = OverloadBackoff(0.2, now)
    agent._pace(backoff, now, 0.0)  # the baseline: no window yet
    with caplog.at_level(logging.DEBUG, logger="hostagent"):
        now += 0.5
        capture.read += 2_796
        capture.dropped += 6_765
        agent._pace(backoff, now, 0.0)
    windows = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cpu effort window")]
    assert windows == ["cpu effort window: 0.50 s, 2796 read, 6765 dropped (71%), full effort; now normal"]
