"""hostagentctl against the real daemon: real BPF, a real HTTP server and curl, spans at a real
OTLP receiver. Every verb is checked by its effect on what the agent exports."""

from __future__ import annotations

import json
import os
import platform
import random
import string
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.support.agent as agent_support
from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app
from tests.unit.admin_harness import cli, world_dir

pytestmark = pytest.mark.root
APP_PORT = free_port()

@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with world_dir() as d:  # traversable, so the access test can run the CLI as nobody
        yield d


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, workdir: Path) -> Iterator[Agent]:
    a = Agent(
        workdir / "agent",
        receiver.endpoint,
        # cpu_policy normal (nice 10): at the default SCHED_IDLE, under 4 busy loops on 2 vCPUs, the
        # tail's spans came after its 30 s and the stop took more than 30 s (test_peer_first_call)
        extra={"exporter": {"batch_size": 16}, "admin": {"group": "hostagent-test-absent"},
               "agent": {"cpu_policy": "normal"}},
    )
    try:
        a.start()
        yield a
    finally:
        assert a.stop() == 0


@pytest.fixture(scope="module")
def app(agent: Agent) -> Iterator[Server]:
    s = start_http_app(APP_PORT)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> None:
    receiver.recorder.clear()


def ctl(agent: Agent, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    return cli("--socket", str(agent.workdir / "run" / "admin.sock"), *args, user=user)


def ctl_json(agent: Agent, *args: str):
    out = ctl(agent, *args, "-o", "json")
    assert out.returncode == 0, out.stderr + agent.log()[-3000:]
    return json.loads(out.stdout)


def curl(path: str, *extra: str) -> None:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *extra, f"http://127.0.0.1:{APP_PORT}{path}"],
        capture_output=True,
        timeout=30,
    )
    assert out.stdout == b"200"


def app_spans(receiver: OtlpGrpcReceiver) -> list[ReceivedSpan]:
    return [
        s
        for s in receiver.recorder.spans
        if APP_PORT in (s.attributes.get("server.port"), s.attributes.get("network.peer.port"))
    ]


def wait_app_spans(receiver: OtlpGrpcReceiver, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(app_spans(receiver)) < count:
        time.sleep(0.1)
    time.sleep(1.0)  # a span too many must show up as a failure
    return app_spans(receiver)


def where(receiver: OtlpGrpcReceiver, secret: str) -> str:
    """Which exported span or metric point carries ``secret`` (for the failure message)."""
    found = [
        f"span {s.name} {k}={v!r}"
        for s in receiver.recorder.spans
        for k, v in {**s.attributes, **{f"resource.{a}": b for a, b in s.resource.items()}, "name": s.name}.items()
        if secret in str(v)
    ]
    found += [f"metric point {p!r}" for p in receiver.recorder.points if secret in repr(p)]
    return f"{secret} exported in: {found}"


def agent_attachments(pid: int) -> int:
    """Tracepoint attachments the agent holds, as the kernel lists them (bpftool perf)."""
    out = subprocess.run(["bpftool", "perf", "show", "-j"], capture_output=True, text=True, check=True)
    return sum(1 for entry in json.loads(out.stdout) if entry["pid"] == pid)


def test_status_describes_the_running_agent(agent: Agent, receiver: OtlpGrpcReceiver) -> None:
    # healthy mirrors the watchdog: the poll loop beat within 5 s. Right after READY the loop may
    # not have beaten yet (bcc compiling took longer than that), so allow it one beat.
    deadline = time.monotonic() + 5
    while not (doc := ctl_json(agent, "status"))["healthy"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert doc["version"] == "0.1.0" and doc["healthy"] is True
    assert doc["kernel_release"] == platform.release()
    http = next(p for p in doc["probes"] if p["name"] == "http")
    assert (http["enabled"], http["state"]) == (True, "attached")
    assert receiver.endpoint.split("//")[-1] in doc["exporter_endpoint"]


def test_disable_stops_spans_and_detaches_programs_enable_restores(
    agent: Agent, app: Server, receiver: OtlpGrpcReceiver
) -> None:
    curl("/before")
    assert len(wait_app_spans(receiver, 2)) == 2
    attached = agent_attachments(agent.pid)
    try:
        ctl_json(agent, "probes", "disable", "http")
        receiver.recorder.clear()
        curl("/while-disabled")  # at once: the pipeline drops a disabled probe's calls
        assert wait_app_spans(receiver, 1, timeout=3) == []
        # Detaching happens on the agent's poll thread; measured here: 1-3.5 s to detach and
        # 1.4-7.5 s to re-attach the socket group's 32 tracepoints, depending on machine load.
        wait_probe_state(agent, "http", "detached", timeout=20)
        assert 0 < agent_attachments(agent.pid) < attached  # socket tracepoints gone, process ones kept
    finally:
        ctl_json(agent, "probes", "enable", "http")
    wait_probe_state(agent, "http", "attached", timeout=30)
    assert agent_attachments(agent.pid) == attached
    curl("/after")
    spans = wait_app_spans(receiver, 2)
    assert sorted(s.attributes["url.path"] for s in spans) == ["/after", "/after"]


def wait_probe_state(agent: Agent, name: str, state: str, timeout: float) -> dict:
    """The probe's entry once it reaches ``state``; fails with the last entry seen."""
    deadline = time.monotonic() + timeout
    while True:
        probe = next(p for p in ctl_json(agent, "probes", "list")["probes"] if p["name"] == name)
        if probe["state"] == state:
            return probe
        if time.monotonic() > deadline:
            raise AssertionError(f"probe {name} not {state} within {timeout}s: {probe}\n{agent.log()[-2000:]}")
        time.sleep(0.1)


def test_sampling_zero_keeps_nothing_one_keeps_all(agent: Agent, app: Server, receiver: OtlpGrpcReceiver) -> None:
    ctl_json(agent, "sampling", "set", "0")
    for _ in range(5):
        curl("/sampled-out")
    assert wait_app_spans(receiver, 1, timeout=3) == []
    ctl_json(agent, "sampling", "set", "1")
    for _ in range(3):
        curl("/kept")
    assert len(wait_app_spans(receiver, 6)) == 6


SECRETS = ("ZZCANARY4711", "bob.canary@example.com", "sekrit-tok-123")


def _leaky_request(agent: Agent, receiver: OtlpGrpcReceiver) -> list[ReceivedSpan]:
    ctl_json(agent, "redaction", "add", "--name", "canary", "--pattern", r"ZZCANARY\d+")
    try:
        curl("/find?q=ZZCANARY4711&mail=bob.canary@example.com", "-H", "Authorization: Bearer sekrit-tok-123")
        spans = wait_app_spans(receiver, 2)
    finally:
        ctl_json(agent, "redaction", "remove", "canary")
    assert len(spans) == 2
    return spans


def test_redaction_rule_applies_to_every_span_field(agent: Agent, app: Server, receiver: OtlpGrpcReceiver) -> None:
    before = int(ctl_json(agent, "status")["redacted"].get("canary", "0"))
    spans = _leaky_request(agent, receiver)
    for s in spans:
        fields = {**s.attributes, "name": s.name, "status": s.status_message}
        for secret in SECRETS:
            assert not [k for k, v in fields.items() if secret in str(v)], where(receiver, secret)
        assert s.attributes["url.query"] == "q=[REDACTED:canary]&mail=[REDACTED:email]"
        assert set(s.attributes["hostagent.pii.types"]) >= {"canary", "email"}
    # status counts each replaced value: as many as the exported spans carry, plus one per process
    # whose resource held it (curl's command line: resources are redacted once per process)
    shown = sum(str(v).count("[REDACTED:canary]") for s in spans for v in s.attributes.values())
    assert shown >= 2
    resources = {repr(sorted(s.resource.items())) for s in spans}
    shown += sum(r.count("[REDACTED:canary]") for r in resources)
    assert int(ctl_json(agent, "status")["redacted"]["canary"]) - before == shown


def test_redacted_values_appear_in_no_exported_byte(agent: Agent, app: Server, receiver: OtlpGrpcReceiver) -> None:
    _leaky_request(agent, receiver)
    raw = receiver.recorder.all_bytes()
    for secret in SECRETS:
        assert secret.encode() not in raw, where(receiver, secret)


def test_tail_shows_live_calls(agent: Agent, app: Server) -> None:
    """The agent traces every process on the host: other runs' and engineers' HTTP calls reach the
    tail too, so the test reads it until both ends of its own calls (a path no one else asks for)
    came, then stops it (--count 2 counted whatever came first)."""
    # letters only: digits such as a pid and a timestamp joined by "-" make a card number one time
    # in ten (Luhn), and the agent's PII detection then exports the path as [REDACTED:card]
    path = "/tailed-" + "".join(random.choices(string.ascii_lowercase, k=16))
    env = {**os.environ, "PYTHONPATH": f"{agent_support.REPO}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv[0]='hostagentctl'; sys.path.insert(0, sys.argv.pop(1));"
            "from tests.unit.admin_harness import shim_dir; sys.path.insert(0, str(shim_dir()));"
            "from hostagentctl.__main__ import main; sys.exit(main())",
            str(agent_support.REPO),
            "--socket",
            str(agent.workdir / "run" / "admin.sock"),
            "tail",
            "--protocol",
            "http",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd="/",
    )
    lines: list[dict[str, Any]] = []
    reader = threading.Thread(target=_read_json_lines, args=(proc, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while _kinds(lines, path) != {"client", "server"} and proc.poll() is None and time.monotonic() < deadline:
            curl(path)
            time.sleep(0.3)
    finally:
        # SIGTERM, not Ctrl-C: under 4 busy loops a SIGINT'ed tail did not exit within 30 s
        # (hostagentctl's exit on Ctrl-C is not what this test is about; noted for a look)
        proc.terminate()
        proc.wait(30)
        reader.join(10)
    assert proc.stderr is not None
    # a tail that ended by itself says why; the last paths show what did come
    said = (proc.returncode, proc.stderr.read(), len(lines), [x["attributes"].get("url.path") for x in lines][-10:])
    assert all(x["protocol"] == "http" for x in lines), said
    # curl's call and the app's answer to it, each a span of its own
    assert _kinds(lines, path) == {"client", "server"}, said
    assert {x["peer"] for x in _mine(lines, path) if x["kind"] == "client"} == {f"127.0.0.1:{APP_PORT}"}


def _read_json_lines(proc: subprocess.Popen[str], into: list[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.append(json.loads(line))


def _mine(lines: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    return [x for x in list(lines) if x["attributes"].get("url.path") == path]


def _kinds(lines: list[dict[str, Any]], path: str) -> set[str]:
    return {x["kind"] for x in _mine(lines, path)}


def test_other_users_are_refused(agent: Agent) -> None:
    out = ctl(agent, "probes", "disable", "http", user="nobody")
    assert out.returncode == 1 and "permission denied" in out.stderr
    assert ctl_json(agent, "probes", "list")["probes"][0]["enabled"] is True


def test_reload_reports_a_bad_config_and_keeps_running(agent: Agent) -> None:
    good = agent.config.read_text()
    try:
        agent.config.write_text(good + "\n[sampling]\nratio = 7\n")
        out = ctl(agent, "reload")
        assert out.returncode == 1
        assert out.stdout.startswith("reload failed, running config kept: ")
        assert str(agent.config) in out.stdout
    finally:
        agent.config.write_text(good)
    assert ctl_json(agent, "reload")["ok"] is True
    assert ctl_json(agent, "status")["healthy"] is True


def test_restart_keeps_runtime_changes_and_reset_restores_config(agent: Agent) -> None:
    ctl_json(agent, "sampling", "set", "0.5", "--keep-errors")
    ctl_json(agent, "probes", "enable", "redis")
    assert agent.stop() == 0
    agent.start()
    doc = ctl_json(agent, "status")
    assert doc["sampling"]["ratio"] == 0.5 and doc["sampling"]["keep_errors"] is True
    assert [p["name"] for p in doc["probes"] if p["enabled"]] == ["http", "redis"]
    assert doc["runtime_overrides"] is True
    assert ctl_json(agent, "reset")["reset"] == ["probes", "sampling", "redaction"]
    doc = ctl_json(agent, "status")
    assert doc["sampling"]["ratio"] == 1.0 and [p["name"] for p in doc["probes"] if p["enabled"]] == ["http"]
    audit = [json.loads(line) for line in (agent.workdir / "state" / "audit.log").read_text().splitlines()]
    actions = [a["action"] for a in audit if a["ok"]]
    assert actions[:2] == ["probes.disable", "probes.enable"] and actions[-1] == "reset"
    assert all(a["who"].startswith("uid=0(root) pid=") for a in audit if a["ok"])
