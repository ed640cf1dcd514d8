"""The daemon's life under a (stand-in) systemd: READY, STATUS, RELOADING, STOPPING on a real
NOTIFY_SOCKET; collector outages; SIGHUP reload; SIGTERM drain-and-flush; bad configs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostagent.daemon import STOP_BUDGET_S
from tests.support.agent import REPO, Agent, write_config
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan, wait_until
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app
from tests.support.threads import policies_but_steady, steady_threads, thread_nice, thread_policy

pytestmark = pytest.mark.root

PORT = free_port()


@pytest.fixture
def app() -> Iterator[Server]:
    s = start_http_app(PORT)
    yield s
    s.stop()


def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.attributes.get("server.port") == PORT
            or s.attributes.get("network.peer.port") == PORT]


def curl(path: str) -> None:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{PORT}{path}"],
                         capture_output=True, timeout=30)
    assert out.stdout == b"200"


def wait_ours(receiver: OtlpGrpcReceiver, count: int, timeout: float = 20.0) -> list[ReceivedSpan]:
    receiver.recorder.wait_for_spans(lambda spans: len(ours(spans)) >= count, timeout)
    return ours(receiver.recorder.spans)


def test_ready_status_and_stopping_with_spans_flushed(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint).start()
    try:
        assert agent.notify is not None
        lines = agent.notify.lines()
        ready = lines.index("READY=1")
        status = [x for x in lines if x.startswith("STATUS=")]
        assert any(x.startswith("EXTEND_TIMEOUT_USEC=") for x in lines[:ready])
        assert re.fullmatch(r"STATUS=\d+ probes attached, exporting to http://127\.0\.0\.1:\d+ \(grpc\), 0 dropped",
                            status[-1]), status
        # every thread yields to the applications once READY ([agent] nice, default 10; cpu_policy,
        # default idle)
        assert agent.proc is not None
        nice = thread_nice(agent.proc.pid)
        assert len(nice) > 3 and set(nice.values()) == {10}, nice
        # (within seconds: on a loaded machine the starvation floor may have raised it at the start)
        pid = agent.proc.pid
        assert wait_until(lambda: policies_but_steady(pid) == {os.SCHED_IDLE}, 15, 0.1), thread_policy(pid)
        # but the starvation watch and the admin's threads (hostagent.priority.keep_normal)
        steady = steady_threads(agent.proc.pid)
        assert len(steady) >= 3 and {thread_policy(agent.proc.pid)[t] for t in steady} == {os.SCHED_OTHER}, steady
        # spans captured just before SIGTERM are exported before the process exits
        for i in range(5):
            curl(f"/last?i={i}")
        agent.signal(signal.SIGTERM)
        assert agent.proc is not None
        assert agent.proc.wait(30) == 0
        assert "STOPPING=1" in agent.notify.lines()
        spans = ours(receiver.recorder.spans)
        assert sorted(s.attributes["url.query"] for s in spans if s.kind == "SERVER") == [
            f"i={i}" for i in range(5)]
        assert len(spans) == 10
    finally:
        agent.stop()
        receiver.stop()


def test_stop_with_the_collector_down_ends_well_inside_the_units_stop_timeout(tmp_path: Path, app: Server) -> None:
    """Spans and metric points waiting for a collector that is down: every export retries with
    backoff (default exporter timeout, 10 s), and the stop must still end within its budget
    (daemon.STOP_BUDGET_S plus the detach), far from systemd's TimeoutStopSec=30s, with the loss
    counted. Nothing listens at its port here, so the stop does not wait for it at all: a few
    seconds, said in the log (it took 14 s, a full budget, before)."""
    receiver = OtlpGrpcReceiver().start()
    port = receiver.port
    receiver.stop()
    # the shipped exporter timeout (the test agents' default is 2 s)
    agent = Agent(tmp_path, f"http://127.0.0.1:{port}", extra={"exporter": {"timeout_ms": 10000}}).start()
    try:
        for i in range(3):
            curl(f"/never-exported?i={i}")
        time.sleep(0.5)
        started = time.monotonic()
        agent.signal(signal.SIGTERM)
        assert agent.proc is not None and agent.proc.wait(30) == 0
        took = time.monotonic() - started
        stopped = re.search(r"stopped; dropped: (.*); partly captured: .*; in ([\d.]+) s \(spans flushed in "
                            r"([\d.]+) s\)", agent.log())
        assert stopped is not None, agent.log()[-2000:]
        print(f"\nstop with the collector down: {took:.1f} s ({stopped.group(0)})")
        assert took < 6.0  # 14 s before nothing listening was noticed, 24 s before the budget
        assert float(stopped.group(2)) <= STOP_BUDGET_S + 1.0
        assert f"stopping: the collector at http://127.0.0.1:{port} refuses connections; not waiting" in agent.log()
        assert "export_failed" in stopped.group(1) or "export_shutdown" in stopped.group(1)
    finally:
        agent.stop()


def test_collector_down_then_up(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    port = receiver.port
    receiver.stop()  # the collector is down when the agent starts
    agent = Agent(tmp_path, f"http://127.0.0.1:{port}",
                  extra={"exporter": {"timeout_ms": 500, "batch_size": 16}}).start()
    try:
        for i in range(3):
            curl(f"/while-down?i={i}")
        # the agent keeps running and says what it lost
        assert agent.notify is not None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            dropped = [int(m.group(1)) for x in agent.notify.lines()
                       if (m := re.search(r", (\d+) dropped(?:,|$)", x))]
            if dropped and dropped[-1] > 0:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"no drop counted in STATUS lines: {agent.notify.lines()}\n{agent.log()}")
        assert agent.proc is not None and agent.proc.poll() is None
        # the collector comes back on the same port: export resumes by itself
        back = OtlpGrpcReceiver(port=port).start()
        try:
            curl("/after?x=1")
            # Spans of /while-down still being retried may reach the collector first (they were
            # queued, not lost): wait for the two spans of /after themselves.
            back.recorder.wait_for_spans(
                lambda spans: sum(1 for s in ours(spans) if s.attributes.get("url.path") == "/after") >= 2, 30)
            after = [s for s in ours(back.recorder.spans) if s.attributes.get("url.path") == "/after"]
            assert sorted(s.kind for s in after) == ["CLIENT", "SERVER"]
        finally:
            assert agent.stop() == 0
            back.stop()
    finally:
        agent.stop()


def test_sighup_reloads_the_config_and_keeps_it_on_errors(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint, extra={"exporter": {"batch_size": 8}}).start()
    try:
        assert agent.notify is not None
        curl("/before")
        wait_ours(receiver, 2)
        # reload with http disabled: no new HTTP spans
        config_text = agent.config.read_text()
        agent.config.write_text(config_text.replace('enabled = ["http"]', 'enabled = ["redis"]')
                                .replace("[agent]\n", "[agent]\nnice = 15\ncpu_policy = \"normal\"\n"))
        agent.reload()
        assert agent.proc is not None
        assert set(thread_nice(agent.proc.pid).values()) == {15}  # a new [agent] nice applies at reload
        assert set(thread_policy(agent.proc.pid).values()) == {os.SCHED_OTHER}  # and a new cpu_policy (as root)
        receiver.recorder.clear()
        curl("/disabled")
        time.sleep(3)
        assert ours(receiver.recorder.spans) == []
        # a broken file: the running config stays, and the agent says why
        agent.config.write_text("[probes]\nenabled = [\"nope\"]\n")
        mark = len(agent.notify.lines())
        agent.signal(signal.SIGHUP)
        agent.notify.wait_for("READY=1", after=mark)
        assert agent.proc is not None and agent.proc.poll() is None
        assert "reload failed, keeping the running config" in agent.log()
        assert "probes.enabled: unknown probe 'nope'" in agent.log()
        # back to http
        agent.config.write_text(config_text)
        mark = len(agent.notify.lines())
        agent.signal(signal.SIGHUP)
        agent.notify.wait_for("READY=1", after=mark + 1)
        curl("/again")
        spans = wait_ours(receiver, 2)
        assert {s.attributes["url.path"] for s in spans} == {"/again"}
    finally:
        assert agent.stop() == 0
        receiver.stop()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[exporter]\nprotocol = "udp"\n', 'exporter.protocol: expected one of "grpc", "http/protobuf", got \'udp\''),
        ("[probes]\nenabled = \"http\"\n", "probes.enabled: expected a list of probe names, got 'http'"),
    ],
)
def test_bad_config_is_one_clear_error_and_exit_1(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for argv in (["run", "--config", str(path)], ["check-config", str(path)]):
        proc = subprocess.run([sys.executable, "-m", "hostagent", *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1
        assert proc.stderr.strip() == f"hostagent: {path}: {message}"
        assert "Traceback" not in proc.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "good.toml", {"probes": {"enabled": ["http", "redis"]}})
    proc = subprocess.run([sys.executable, "-m", "hostagent", "check-config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{path}: OK"
