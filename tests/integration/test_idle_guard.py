"""[agent] cpu_policy idle and its floor, live: with every CPU busy the agent at SCHED_IDLE falls
behind, its threads go to SCHED_OTHER at [agent] nice until the ring is drained, then back.

CPU hogs (one busy nice-0 process per CPU, stopped by PID) stand in for a saturated host; the
ring is 1 MiB so that a few thousand requests fill half of it while the agent gets ~0.3% of a CPU.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.hogs import start_hogs, stop_hogs
from tests.support.otlp_receiver import OtlpGrpcReceiver, wait_until
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app
from tests.support.threads import policies_but_steady, thread_policy

pytestmark = pytest.mark.root

PORT = free_port()


@pytest.fixture
def app() -> Iterator[Server]:
    srv = start_http_app(PORT)
    yield srv
    srv.stop()


def _policies(pid: int) -> set[int]:
    """The policies of the threads the guard moves (not the starvation watch's nor the admin's)."""
    return policies_but_steady(pid)


def _traffic(stop: threading.Event, sent: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    try:
        while not stop.is_set():
            conn.request("GET", f"/busy?i={sent[0]}&pad={'x' * 600}")
            conn.getresponse().read()
            sent[0] += 1
    finally:
        conn.close()


def test_a_starved_agent_is_raised_while_behind_and_lowered_once_drained(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    # the ring's floor alone: the second (hostagent.starvation) raises a loaded host's agent first
    agent = Agent(tmp_path, receiver.endpoint, extra={"probes": {"ring_buffer_mib": 1},
                                                      "agent": {"starved_after_ms": 0}}).start()
    hogs: list[subprocess.Popen[bytes]] = []
    stop, sent = threading.Event(), [0]
    client = threading.Thread(target=_traffic, args=(stop, sent), daemon=True)
    try:
        assert _policies(agent.pid) == {os.SCHED_IDLE}
        hogs = start_hogs()
        client.start()
        raised = wait_until(lambda: os.SCHED_OTHER in _policies(agent.pid), 60, 0.1)
        stop.set()
        client.join(30)
        assert raised, (sent, agent.log()[-3000:])
        # the threads are raised before the line is written, and the agent, at nice 10 beside the
        # hogs, may take a while to write it: waited for, not read at once
        behind = re.compile(r"cpu priority: behind \(\d+% of the ring unread\): nice 10, cpu_policy normal on \d+ "
                            r"threads .*; back at idle after 2 s calm")
        assert wait_until(lambda: behind.search(agent.log()) is not None, 10, 0.1), agent.log()[-3000:]
        stop_hogs(hogs)
        hogs = []
        # drained, then two calm seconds: every thread back at SCHED_IDLE, and the log says so
        assert wait_until(lambda: _policies(agent.pid) == {os.SCHED_IDLE}, 20, 0.1), thread_policy(agent.pid)
        assert wait_until(lambda: "cpu priority: caught up: nice 10, cpu_policy idle on" in agent.log(), 10, 0.1), \
            agent.log()[-3000:]
    finally:
        stop.set()
        stop_hogs(hogs)
        agent.stop()
        receiver.stop()
