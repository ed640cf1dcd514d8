"""The .deb under a real systemd, as an administrator uses it.

One booted bookworm machine for the module; the tests run in file order and each leaves the
machine in the state the next one starts from (installed and running, until the last ones remove
and purge the package). Commands run inside with nsenter; the agent itself only ever runs as the
unit, with the unit's sandbox.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from hostagent.identity.procfs import stat_fields
from hostagent.priority import STEADY_NAME_PREFIX
from tests.e2e.conftest import OTLP_PORT
from tests.e2e.nspawn import Container, wait_for
from tests.e2e.unitctl import DROPIN_DIR, UNIT, export_to, journal, main_pid, prop, wait_active_with_new_pid
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # the first test also debootstraps (~5 min on a fresh machine)

WEB_PORT = free_port()
MAX_EXPOSURE = 5.0


def curl_spans(box: Container, receiver: OtlpGrpcReceiver, timeout: float = 30.0) -> tuple[str, list[ReceivedSpan]]:
    """One curl to the machine's web server at a fresh path; the spans whose url.path is that path."""
    path = f"/e2e-{uuid.uuid4().hex[:12]}"
    out = box.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{WEB_PORT}{path}"])
    assert out.stdout == "404"  # http.server answers 404 for a file that does not exist

    def found() -> list[ReceivedSpan]:
        return [s for s in receiver.spans if s.attributes.get("url.path") == path]

    spans = found()
    if timeout:
        deadline = time.monotonic() + timeout
        while len({s.kind for s in spans}) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            spans = found()
    return path, spans


@pytest.fixture(scope="module")
def installed(machine: Container, debs: dict[int, Path]) -> Container:
    """Export to the host's receiver (a drop-in made before the package, as a config tool would),
    a web server to call, two users, then `apt-get install ./hostagent_*.deb`."""
    export_to(machine, OTLP_PORT)
    machine.run(["systemd-run", "--unit=e2e-web", "--property=WorkingDirectory=/tmp",
                 "python3", "-m", "http.server", "--bind", "127.0.0.1", str(WEB_PORT)])
    machine.run("useradd --create-home alice && useradd --create-home bob")
    started = time.monotonic()
    machine.run(["apt-get", "install", "-y", "--no-install-recommends", f"/pkgs/{debs[1].name}"], timeout=300)
    print(f"apt-get install (venv + start): {time.monotonic() - started:.1f} s")
    return machine


def test_install_enables_and_starts_with_status_line(installed: Container) -> None:
    box = installed
    assert box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active"
    assert box.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "enabled"
    status = prop(box, "StatusText")
    expected = (rf"[1-9]\d* probes attached, exporting to http://127\.0\.0\.1:{OTLP_PORT} \(grpc\), "
                r"\d+ dropped(, \d+ partly captured)?")
    assert re.fullmatch(expected, status), status
    assert box.run(["getent", "group", "hostagent"]).stdout.startswith("hostagent:x:")
    assert box.run(["hostagent", "version"]).stdout.strip() == f"hostagent {debs_version(box)}"
    # The agent runs as root with group hostagent; its files are group-owned.
    assert box.run(["stat", "-c", "%U %G %a", "/var/lib/hostagent"]).stdout.split() == ["root", "hostagent", "750"]
    # The unit's sandbox really applies to the running agent.
    pid = main_pid(box)
    status = box.run(["cat", f"/proc/{pid}/status"]).stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert re.search(r"^Seccomp:\s+2$", status, re.M)
    assert int(re.search(r"^CapBnd:\s+([0-9a-f]+)$", status, re.M).group(1), 16) == int(  # type: ignore[union-attr]
        re.search(r"^CapEff:\s+([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    # ...and lets the agent lower its own priority ([agent] nice = 10, cpu_policy = "idle"): every
    # thread, fields 19 (nice) and 41 (policy, 5 = SCHED_IDLE) of stat, except the steady ones
    # (the starvation watch and the admin API's threads: SCHED_OTHER at nice 10 on purpose)
    tasks = box.run(["sh", "-c", f"cat /proc/{pid}/task/*/stat"]).stdout.splitlines()
    assert len(tasks) > 3 and {int(stat_fields(t)[16]) for t in tasks} == {10}, tasks
    steady = [t for t in tasks if t[t.index("(") + 1:t.rindex(")")].startswith(STEADY_NAME_PREFIX)]
    assert steady and {int(stat_fields(t)[38]) for t in steady} == {os.SCHED_OTHER}, tasks
    assert {int(stat_fields(t)[38]) for t in tasks if t not in steady} == {os.SCHED_IDLE}, tasks
    # CAP_SYS_NICE (23) lets the idle policy's floor raise the agent while it is behind
    assert int(re.search(r"^CapEff:\s+([0-9a-f]+)$", status, re.M).group(1), 16) & (1 << 23)  # type: ignore[union-attr]
    assert "cpu_policy idle on" in journal(box), journal(box)[-3000:]
    # bookworm's python3 is the CPython the package's compiled wheel was built for
    assert "per-span stages: compiled (mypyc): " in journal(box), journal(box)[-3000:]


def debs_version(box: Container) -> str:
    return box.run(["dpkg-query", "-W", "-f=${Version}", "hostagent"]).stdout.split("-")[0]


def test_security_exposure_at_most_5(installed: Container) -> None:
    out = installed.run(["systemd-analyze", "security", "--no-pager", UNIT], check=False).stdout
    m = re.search(r"Overall exposure level for hostagent\.service: (\d+\.\d+)", out)
    assert m, out
    print(f"systemd-analyze security: {m.group(1)}")
    assert float(m.group(1)) <= MAX_EXPOSURE, out


def test_curl_in_the_machine_becomes_client_and_server_spans(
    installed: Container, receiver: OtlpGrpcReceiver
) -> None:
    _, spans = curl_spans(installed, receiver)
    kinds = sorted(s.kind for s in spans)
    assert kinds == ["CLIENT", "SERVER"], (kinds, journal(installed)[-2000:])
    for span in spans:
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["http.response.status_code"] == 404
    client = next(s for s in spans if s.kind == "CLIENT")
    server = next(s for s in spans if s.kind == "SERVER")
    assert client.resource["process.executable.name"] == "curl"
    assert server.resource["process.executable.name"] == "python3"


def test_hostagentctl_for_group_members_only(installed: Container) -> None:
    box = installed
    assert box.run(["stat", "-c", "%U %G %a", "/run/hostagent/admin.sock"]).stdout.split() == [
        "root", "hostagent", "660"]
    box.run(["usermod", "-aG", "hostagent", "alice"])
    done = box.run(["hostagentctl", "probes", "disable", "http"], user="alice", check=False)
    assert done.returncode == 0, done
    assert probe_enabled(box, "http", user="alice") is False
    refused = box.run(["hostagentctl", "probes", "enable", "http"], user="bob", check=False)
    assert refused.returncode != 0
    assert "permission denied" in refused.stderr, refused
    box.run(["hostagentctl", "probes", "enable", "http"], user="alice")
    assert probe_enabled(box, "http", user="alice") is True


def probe_enabled(box: Container, name: str, user: str) -> bool:
    listed = json.loads(box.run(["hostagentctl", "probes", "list", "-o", "json"], user=user).stdout)
    return bool(next(p["enabled"] for p in listed["probes"] if p["name"] == name))


def test_reload_rereads_config_in_the_same_process(installed: Container) -> None:
    box = installed
    pid = main_pid(box)
    before = journal(box).count("reloaded /etc/hostagent/hostagent.toml")
    box.run(["systemctl", "reload", UNIT])
    assert main_pid(box) == pid
    # systemd 252's `systemctl reload` returns when ExecReload's kill exits; the unit is "reloading"
    # until the agent's READY=1 (seen once in CI right after the call): active within the bound
    wait_for(lambda: box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active", 10,
             "the unit to be active again after the reload")
    wait_for(lambda: journal(box).count("reloaded /etc/hostagent/hostagent.toml") == before + 1, 10,
             "the agent to log the reload")


def test_restart_rebuilds_a_small_header_tree(installed: Container) -> None:
    """systemd empties /run/hostagent at every stop (RuntimeDirectory=, not preserved), so each
    start makes the merged kernel-header tree again: linked by directory, a hundred-odd entries,
    not a link per header file (~16k, seconds on every start)."""
    box = installed
    before = int(box.run(["date", "+%s"]).stdout)
    started = time.monotonic()
    box.run(["systemctl", "restart", UNIT], timeout=200)  # Type=notify: returns at READY=1
    print(f"systemctl restart to READY: {time.monotonic() - started:.2f} s")
    stamps = box.run("ls -d /run/hostagent/headers-*/.hostagent-merged").stdout.split()
    assert len(stamps) == 1
    tree = stamps[0].rsplit("/", 1)[0]
    assert int(box.run(["stat", "-c", "%Y", stamps[0]]).stdout) >= before  # made by this start
    entries = int(box.run(f"find {tree} | wc -l").stdout)
    assert 10 < entries < 1000
    assert box.run(["test", "-f", f"{tree}/include/linux/types.h"], check=False).returncode == 0


def test_sigkill_makes_systemd_restart_it(installed: Container, receiver: OtlpGrpcReceiver) -> None:
    box = installed
    pid = main_pid(box)
    restarts = int(prop(box, "NRestarts"))
    box.run(["kill", "-KILL", str(pid)])
    wait_active_with_new_pid(box, pid)
    assert int(prop(box, "NRestarts")) == restarts + 1
    _, spans = curl_spans(box, receiver)  # the restarted agent captures again
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER"]


def test_sigstop_makes_the_watchdog_restart_it(installed: Container) -> None:
    box = installed
    box.write(f"{DROPIN_DIR}/20-e2e-watchdog.conf", "[Service]\nWatchdogSec=4s\n")
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "restart", UNIT], timeout=200)
    assert prop(box, "WatchdogUSec") == "4s"
    pid = main_pid(box)
    restarts = int(prop(box, "NRestarts"))
    box.run(["kill", "-STOP", str(pid)])
    wait_active_with_new_pid(box, pid)
    assert int(prop(box, "NRestarts")) == restarts + 1
    assert "Watchdog timeout" in box.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
    box.run(["rm", f"{DROPIN_DIR}/20-e2e-watchdog.conf"])
    box.run(["systemctl", "daemon-reload"])


def test_upgrade_keeps_config_edits_and_runtime_settings(installed: Container, debs: dict[int, Path]) -> None:
    box = installed
    # An administrator's edit of the conffile, and a runtime change that persists in the state dir.
    box.run(["sed", "-i", 's/^log_level = "info"/log_level = "debug"/', "/etc/hostagent/hostagent.toml"])
    runtime_change = box.run(["hostagentctl", "sampling", "set", "0.5"], check=False)
    pid = main_pid(box)
    # As unattended upgrades run it: where both sides changed a conffile, keep the administrator's.
    # (Here only the administrator did, and dpkg keeps the edit without asking.)
    box.run(["apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confdef",
             "-o", "Dpkg::Options::=--force-confold", f"/pkgs/{debs[2].name}"], timeout=300)
    assert box.run(["dpkg-query", "-W", "-f=${Version}", "hostagent"]).stdout.endswith("-2")
    assert box.run(["test", "-e", "/etc/hostagent/hostagent.toml.dpkg-dist"], check=False).returncode == 1
    wait_active_with_new_pid(box, pid)
    assert 'log_level = "debug"' in box.run(["cat", "/etc/hostagent/hostagent.toml"]).stdout
    assert "DEBUG" in journal(box).split("starting with /etc/hostagent/hostagent.toml")[-1]
    # Checked last, so that the package's part above is proven even while the admin API is missing.
    assert runtime_change.returncode == 0, runtime_change
    got = json.loads(box.run(["hostagentctl", "sampling", "get", "-o", "json"]).stdout)
    assert got["ratio"] == 0.5, got
    box.run(["hostagentctl", "reset"])


def test_stop_is_clean_and_flushes_spans(installed: Container, receiver: OtlpGrpcReceiver) -> None:
    box = installed
    path = f"/e2e-stop-{uuid.uuid4().hex[:8]}"
    box.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{WEB_PORT}{path}"])
    started = time.monotonic()
    box.run(["systemctl", "stop", UNIT], timeout=60)
    took = time.monotonic() - started
    assert took < 30, took  # TimeoutStopSec=30s: it ended by itself, not by SIGKILL
    assert (prop(box, "Result"), prop(box, "ExecMainStatus")) == ("success", "0"), journal(box)[-3000:]
    # Spans the agent held when SIGTERM came were flushed before it exited.
    kinds = sorted(s.kind for s in receiver.spans if s.attributes.get("url.path") == path)
    assert kinds == ["CLIENT", "SERVER"], journal(box)[-2000:]
    box.run(["systemctl", "start", UNIT], timeout=200)


def test_remove_stops_it_and_purge_removes_its_state(installed: Container) -> None:
    box = installed
    assert box.run(["test", "-d", "/var/lib/hostagent"], check=False).returncode == 0
    box.run(["apt-get", "remove", "-y", "hostagent"], timeout=120)
    state = box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip()
    assert state in ("inactive", "unknown"), (state, journal(box)[-3000:])
    assert box.run(["pgrep", "-f", "hostagent run"], check=False).returncode == 1
    assert box.run(["test", "-e", "/opt/hostagent/venv"], check=False).returncode == 1
    assert box.run(["test", "-f", "/etc/hostagent/hostagent.toml"], check=False).returncode == 0  # conffile kept
    assert box.run(["test", "-d", "/var/lib/hostagent"], check=False).returncode == 0  # state kept
    box.run(["apt-get", "purge", "-y", "hostagent"], timeout=120)
    for gone in ("/var/lib/hostagent", "/etc/hostagent", "/opt/hostagent"):
        assert box.run(["test", "-e", gone], check=False).returncode == 1, gone
    assert box.run(["dpkg-query", "-W", "hostagent"], check=False).returncode != 0
