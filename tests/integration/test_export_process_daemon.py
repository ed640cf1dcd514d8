"""The daemon's spans sent by its export process ([exporter] process = true, hostagent.export.process): real
BPF, real curl and a real HTTP server, the real OTLP/gRPC receiver. The child starts before READY
and takes the agent's priority; spans reach the receiver through it; SIGTERM flushes through it
and it exits with the agent; killed by SIGKILL while holding a batch it is restarted and the batch
counted lost (export_failed); SIGHUP with new exporter headers reaches it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan, wait_until
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app
from tests.support.threads import thread_nice, thread_policy

pytestmark = pytest.mark.root

PORT = free_port()


@pytest.fixture
def app() -> Iterator[Server]:
    s = start_http_app(PORT)
    yield s
    s.stop()


def ours(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.attributes.get("server.port") == PORT]


def curl(path: str) -> None:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{PORT}{path}"],
                         capture_output=True, timeout=30)
    assert out.stdout == b"200"


def export_children(pid: int) -> list[int]:
    """The agent's export processes (by their command line)."""
    kids = []  # a restarted one is the export thread's child, not the main thread's
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    out = []
    for kid in kids:
        try:
            if b"hostagent.export.child" in Path(f"/proc/{kid}/cmdline").read_bytes():
                out.append(kid)
        except OSError:
            continue
    return out


def test_spans_go_through_the_export_process_and_sigterm_flushes_it(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint, extra={"exporter": {"process": True}}).start()
    try:
        assert agent.proc is not None
        children = export_children(agent.pid)
        assert len(children) == 1, children  # started before READY
        child = children[0]
        # it takes the agent's priority with it ([agent] nice 10, cpu_policy idle; at the start the
        # starvation floor may raise both for a while)
        assert wait_until(lambda: set(thread_policy(child).values()) == {os.SCHED_IDLE}, 15, 0.1), thread_policy(child)
        assert set(thread_nice(child).values()) == {10}
        curl("/through-the-child")
        receiver.recorder.wait_for_spans(lambda spans: len(ours(spans)) >= 2, 20)
        assert sorted(s.kind for s in ours(receiver.recorder.spans)) == ["CLIENT", "SERVER"]
        # the agent's own export calls (seen by the kernel: the child is not the agent's pid) are no span
        assert not [s for s in receiver.recorder.spans if s.attributes.get("server.port") == receiver.port]
        for i in range(5):
            curl(f"/last?i={i}")
        agent.signal(signal.SIGTERM)
        assert agent.proc.wait(30) == 0
        assert not Path(f"/proc/{child}").exists() or b"zombie" in Path(f"/proc/{child}/status").read_bytes()
        last = sorted(s.attributes.get("url.query") for s in ours(receiver.recorder.spans)
                      if s.kind == "SERVER" and s.attributes.get("url.path") == "/last")
        assert last == [f"i={i}" for i in range(5)]
        assert "stopped; dropped: nothing;" in agent.log()
    finally:
        agent.stop()
        receiver.stop()


def test_the_export_process_killed_holding_a_batch_is_restarted_and_the_loss_counted(
        tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    receiver.fail_with = grpc.StatusCode.UNAVAILABLE  # the child holds its batch, retrying
    # metrics off: only span exports are rejected
    agent = Agent(tmp_path, receiver.endpoint, extra={"exporter": {"timeout_ms": 20000, "metrics": False,
                                                                  "process": True}}).start()
    try:
        (first,) = export_children(agent.pid)
        curl("/held")
        assert wait_until(lambda: receiver.rejected >= 1, 20)
        os.kill(first, signal.SIGKILL)
        # the death as the agent tells it (EOF, or a reset when the child died with bytes unread),
        # then its successor: waited for in that order, as the agent does them
        died = re.compile(rf"span export: process {first} (?:exited|failed \([^)]*\)) \(exit status -9\) "
                          r"holding (\d+) spans \(counted as export_failed\)")
        assert wait_until(lambda: died.search(agent.log()) is not None, 15), agent.log()[-3000:]
        assert wait_until(lambda: len(export_children(agent.pid)) == 1 and export_children(agent.pid) != [first], 15)
        lost = died.search(agent.log())
        assert lost is not None
        held = int(lost.group(1))
        assert held >= 2  # /held's client and server spans at least (the host's other calls too)
        drops = agent.drops()
        assert f"export_failed {held}" in drops, drops
        receiver.fail_with = None
        curl("/after")
        receiver.recorder.wait_for_spans(
            lambda spans: sum(1 for s in ours(spans) if s.attributes.get("url.path") == "/after") == 2, 20)
        assert not [s for s in ours(receiver.recorder.spans) if s.attributes.get("url.path") == "/held"]
    finally:
        assert agent.stop() == 0
        receiver.stop()


def test_sighup_with_new_exporter_settings_reaches_the_export_process(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint, extra={"exporter": {"metrics": False, "process": True}}).start()
    try:
        curl("/before")
        receiver.recorder.wait_for_spans(lambda spans: len(ours(spans)) >= 2, 20)
        text = agent.config.read_text().replace("[exporter]\n", '[exporter]\nheaders = { "x-tenant" = "blue" }\n')
        agent.config.write_text(text)
        agent.reload()
        (child,) = export_children(agent.pid)
        receiver.recorder.clear()
        curl("/after")
        receiver.recorder.wait_for_spans(lambda spans: len(ours(spans)) >= 2, 20)
        headers = receiver.recorder.headers
        assert headers and all(h.get("x-tenant") == "blue" for h in headers), headers
        assert export_children(agent.pid) == [child]  # the same process, its exporter built again
    finally:
        assert agent.stop() == 0
        receiver.stop()


def test_the_default_exports_in_process(tmp_path: Path, app: Server) -> None:
    receiver = OtlpGrpcReceiver().start()
    agent = Agent(tmp_path, receiver.endpoint).start()
    try:
        assert export_children(agent.pid) == []
        curl("/in-process")
        receiver.recorder.wait_for_spans(lambda spans: len(ours(spans)) >= 2, 20)
    finally:
        assert agent.stop() == 0
        receiver.stop()



def test_stop_with_the_collector_down_kills_a_child_stuck_retrying_and_counts_its_batch(
        tmp_path: Path, app: Server) -> None:
    """The child retries with backoff for the exporter's timeout (10 s, as shipped); the stop's
    budget for a collector refusing connections is 1 s: the child holding the batch is killed, the
    batch counted, and the stop ends as fast as in process."""
    receiver = OtlpGrpcReceiver().start()
    port = receiver.port
    receiver.stop()
    agent = Agent(tmp_path, f"http://127.0.0.1:{port}",
                  extra={"exporter": {"timeout_ms": 10000, "process": True, "metrics": False}}).start()
    try:
        (child,) = export_children(agent.pid)
        for i in range(3):
            curl(f"/never-exported?i={i}")
        time.sleep(1.0)  # the batch is with the child, retrying
        started = time.monotonic()
        agent.signal(signal.SIGTERM)
        assert agent.proc is not None and agent.proc.wait(30) == 0
        took = time.monotonic() - started
        assert took < 6.0, agent.log()[-2000:]
        assert not Path(f"/proc/{child}").exists() or b"zombie" in Path(f"/proc/{child}/status").read_bytes()
        stopped = re.search(r"stopped; dropped: (\{.*\}); partly captured", agent.log())
        assert stopped is not None and "'export_failed': " in stopped.group(1), agent.log()[-2000:]
    finally:
        agent.stop()
