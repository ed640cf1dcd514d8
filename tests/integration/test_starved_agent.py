"""cpu_policy idle on a saturated host at a low call rate: the ring never gets half full, so only
the starvation floor (hostagent.starvation) raises the agent. Spans still arrive within seconds
and hostagentctl answers within its default timeout.

Two busy nice-0 processes per CPU (started and stopped by PID) stand in for the saturated host,
and 100 calls a second for the work the agent has there. Before the floor (main at beec63c, two
runs here) the agent stayed at SCHED_IDLE, nothing was dropped, and the measured curls' spans
came 12-14 s late or not within the test (the acceptance run: 20-58 s). The bound, 5 s: the
floor's second, its quarter-second tick, the export's half-second batch delay and the trace
linker's hold (1.5 s), with 1.75 s to spare on a shared 2-vCPU machine.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.hogs import start_hogs, stop_hogs
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app
from tests.unit.admin_harness import cli

pytestmark = pytest.mark.root

PORT = free_port()
CALLS = 15
BOUND_S = 5.0
# Calls a second beside the measured ones: work enough that the ~0.3% of a CPU SCHED_IDLE leaves
# does not keep up, far too little to fill half of the 2 MiB ring before the starvation floor has
# the agent drain it (the first floor stays down; ~60 KiB/s).
BACKGROUND_PER_S = 100
# Two busy loops per CPU: with one, a SCHED_IDLE agent here still kept up in most runs (the
# machine's other load leaves gaps); with two its share halves and its gaps grow (bench/README,
# twelfth round: 29 ms beside one busy thread per CPU, 0.27 s beside four).
HOGS_PER_CPU = 2


@pytest.fixture
def app() -> Iterator[Server]:
    srv = start_http_app(PORT)
    yield srv
    srv.stop()


def _first_seen(receiver: OtlpGrpcReceiver, stop: threading.Event, seen: dict[str, float]) -> None:
    """When each call's server span first reached the receiver (monotonic), by its query."""
    while not stop.is_set():
        spans: list[ReceivedSpan] = receiver.spans
        for span in spans:
            query = span.attributes.get("url.query", "")
            if span.kind == "SERVER" and query.startswith("starved=") and query not in seen:
                seen[query] = time.monotonic()
        time.sleep(0.05)


def _background(stop: threading.Event) -> None:
    """BACKGROUND_PER_S keep-alive requests a second, paced, until ``stop``."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    began, n = time.monotonic(), 0
    try:
        while not stop.is_set():
            conn.request("GET", f"/bg?i={n}")
            conn.getresponse().read()
            n += 1
            time.sleep(max(0.0, began + n / BACKGROUND_PER_S - time.monotonic()))
    finally:
        conn.close()


def _ring_full(workdir: Path) -> int:
    """Records the kernel dropped so far for a full ring (hostagentctl status, as JSON)."""
    out = cli("--socket", str(workdir / "run" / "admin.sock"), "status", "-o", "json", timeout=60)
    return int(json.loads(out.stdout).get("drops", {}).get("kernel_ringbuf_full", 0)) if out.returncode == 0 else 0


def test_spans_and_admin_answers_arrive_within_seconds_on_a_saturated_host(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint).start()
    hogs: list[subprocess.Popen[bytes]] = []
    stop, seen, sent = threading.Event(), {}, {}
    watcher = threading.Thread(target=_first_seen, args=(receiver, stop, seen), daemon=True)
    watcher.start()
    background = threading.Thread(target=_background, args=(stop,), daemon=True)
    statuses: list[tuple[float, int, str]] = []
    try:
        hogs = start_hogs(HOGS_PER_CPU)
        background.start()
        time.sleep(2)  # the agent's threads idle beside them
        for i in range(CALLS):
            query = f"starved={i}"
            began = sent[query] = time.monotonic()
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                  f"http://127.0.0.1:{PORT}/s?{query}"], capture_output=True, timeout=30)
            assert out.stdout == b"200"
            if i % 5 == 4:  # the verb an SRE types first; its default timeout is 5 s
                ctl = cli("--socket", str(tmp_path / "run" / "admin.sock"), "status", timeout=60)
                statuses.append((round(time.monotonic() - began, 2), ctl.returncode, ctl.stderr[-300:]))
            time.sleep(max(0.0, began + 1 - time.monotonic()))
        time.sleep(BOUND_S + 1)
        stop.set()
        watcher.join(5)
        background.join(30)
        delays = {q: round(seen[q] - sent[q], 2) if q in seen else None for q in sent}
        print("delays", delays, "status", statuses)  # pytest -s: the figures of a passing run
        said = [line for line in agent.log().splitlines() if "cpu priority" in line]
        overflowed = _ring_full(tmp_path)
        if overflowed and not all(d is not None and d <= BOUND_S for d in delays.values()):
            # Every process's calls go through the one ring: another load on the host (a shared
            # machine's benchmark) that overflows it makes this overload, which no priority
            # floor bounds (hostagent.overload), not the starvation measured here.
            pytest.skip(f"the host's other traffic overflowed the ring ({overflowed} records dropped): {delays}")
        assert all(d is not None and d <= BOUND_S for d in delays.values()), (delays, said)
        assert [rc for _, rc, _ in statuses] == [0, 0, 0], (statuses, said)
    finally:
        stop.set()
        stop_hogs(hogs)
        agent.stop()
        receiver.stop()
