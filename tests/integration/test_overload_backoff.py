"""[agent] overload_duty, live: hopelessly behind (nginx at saturation, the agent sharing the load
generator's CPU with a 1 MiB ring), the agent backs off -- says so, holds its threads at SCHED_IDLE
and STATUS says it -- and returns to full effort once the load is gone; what it did not take is
counted as dropped.

nginx is pinned to CPU 0, wrk and the agent to CPU 1 (the bench's placement), with a nice-0 busy
loop on CPU 1 until the agent backs off: there nginx serves tens of thousands of requests a second and
the agent, at nice 10 beside two nice-0 processes, gets a tenth of a CPU at most, so more than three
quarters of the calls are dropped at its full effort on any machine with two CPUs or more. Without
the busy loop wrk leaves CPU 1 idle whenever nginx is the bottleneck, and the agent (~15 us per span
live since the twenty-third round) kept a third of nginx's calls there: behind, not hopeless.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import run_wrk
from bench.servers import Proc, nginx
from tests.support.agent import Agent
from tests.support.hogs import start_hog_on, stop_hogs
from tests.support.otlp_receiver import OtlpGrpcReceiver, wait_until
from tests.support.ports import free_port
from tests.support.threads import policies_but_steady
from tests.unit.admin_harness import cli

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a CPU for nginx and one for wrk and the agent"),
]

PORT = free_port()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Proc]:
    proc = nginx(tmp_path / "nginx", PORT, "0")
    try:
        yield proc
    finally:
        proc.stop()


def _pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` on ``cpu`` (threads started later inherit it from their creator)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:
            pass  # a thread that just ended


def _cpu_effort(agent: Agent) -> str:
    out = cli("--socket", str(agent.workdir / "run" / "admin.sock"), "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout).get("cpu_effort", ""))


def test_hopelessly_behind_the_agent_backs_off_and_returns_when_the_load_is_gone(
    tmp_path: Path, server: Proc
) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint, extra={"probes": {"ring_buffer_mib": 1}}).start()
    load = threading.Thread(
        target=run_wrk,
        kwargs={"url": f"http://127.0.0.1:{PORT}/index.html", "seconds": 12.0, "conns": 16, "cpus": "1",
                "workdir": tmp_path},
        daemon=True,
    )
    hogs = [start_hog_on(1)]
    try:
        _pin(agent.pid, 1)
        load.start()
        backed_off = wait_until(lambda: "cpu effort: overloaded" in agent.log(), 11, 0.1)
        # backed off, the agent waits at SCHED_IDLE: beside the busy loop its next log lines would be late
        stop_hogs(hogs)
        held = "cpu priority: overloaded, not competing: nice 10, cpu_policy idle on"
        wait_until(lambda: held in agent.log(), 5, 0.1)
        log = agent.log()
        assert backed_off, log[-3000:]
        said = re.search(r"cpu effort: overloaded: (\d+)% of the calls dropped at full effort \(([\d,]+)/s arriving\); "
                         r"working 20% of the time until arrivals halve \(full effort tried again every 60 s\)", log)
        assert said, log[-3000:]
        assert int(said.group(1)) >= 75 and int(said.group(2).replace(",", "")) > 10_000
        # it had been raised by the floor to get there; backed off, it is held at SCHED_IDLE
        assert held in log, log[-3000:]
        assert load.is_alive()
        assert policies_but_steady(agent.pid) == {os.SCHED_IDLE}
        assert _cpu_effort(agent).startswith("backed off: overloaded, working 20% of the time (for ")
        load.join(30)
        # the load gone, the arrivals stay under half for two windows in a row
        back = "cpu effort: back to full effort: arrivals fell to"
        assert wait_until(lambda: back in agent.log(), 10, 0.1), agent.log()[-3000:]
        assert _cpu_effort(agent) in ("idle (SCHED_IDLE)", "raised: behind, at nice 10 until drained")
    finally:
        stop_hogs(hogs)
        load.join(30)
        agent.stop()
        receiver.stop()
    stopped = re.search(r"stopped; dropped: (\{[^}]*\})", agent.log())
    assert stopped and "'kernel_ringbuf_full'" in stopped.group(1), agent.log()[-2000:]
