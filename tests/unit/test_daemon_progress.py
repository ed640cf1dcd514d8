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

    def __init__(self) -> None:
        self.seen: list[float] = []

    def observe(self, backlog: float) -> str | None:
        self.seen.append(backlog)
        return None


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
