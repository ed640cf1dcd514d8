"""How often the agent's own loops wake when nothing calls for it: every wake-up of the poll loop
and of the linking sweeper costs CPU whatever it finds to do (bench/README, eighteenth round: at
100 and 50 a second they were a sixth of the live agent's CPU per span beside Flask at 1k req/s)."""

from __future__ import annotations

import time
from typing import Optional

from hostagent.config import Config
from hostagent.daemon import Agent
from hostagent.receiver.wiring import Layering


class _IdleCapture:
    """Stands in for assembly.Capture: a ring that no producer wakes (each poll waits its timeout)."""

    def __init__(self, agent: Agent, turns: int) -> None:
        self.agent, self.turns = agent, turns
        self.timeouts: list[float] = []

    def poll(self, timeout_s: float, budget_s: Optional[float] = None) -> int:
        self.timeouts.append(timeout_s)
        if len(self.timeouts) >= self.turns:
            self.agent.stop_requested = True
        return 0


def test_the_poll_loop_waits_50_ms_for_a_wake_up_before_it_drains() -> None:
    agent = Agent(Config())
    agent.backoff = None
    capture = _IdleCapture(agent, turns=3)
    agent.capture = capture  # type: ignore[assignment]
    agent.shutdown = lambda: None  # type: ignore[method-assign]
    assert agent.run() == 0
    assert len(capture.timeouts) == 3
    assert min(capture.timeouts) >= 0.05  # at most 20 wake-ups a second on a quiet ring


class _CountingLinker:
    def __init__(self) -> None:
        self.sweeps = 0
        self.flushed = False

    def sweep(self) -> None:
        self.sweeps += 1

    def flush_all(self) -> None:
        self.flushed = True


def test_the_linking_sweeper_wakes_at_most_ten_times_a_second() -> None:
    layering = Layering(Config(), lambda span: None, lambda: None)
    linker = _CountingLinker()
    layering.linker = linker  # type: ignore[assignment]
    layering.start()
    try:
        time.sleep(0.5)
        # A late wake-up (a busy machine) only lowers the count; 20 ms sweeps made ~25 here.
        assert linker.sweeps <= 6
        deadline = time.monotonic() + 5.0
        while linker.sweeps == 0 and time.monotonic() < deadline:  # it does sweep
            time.sleep(0.05)
        assert linker.sweeps >= 1
    finally:
        layering.stop(1.0)
    assert linker.flushed
