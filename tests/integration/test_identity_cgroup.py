"""Real processes in real cgroups, named by the live /proc (root: creates cgroups, moves pids).

This machine mounts cgroup v1 with systemd's named hierarchy (``name=systemd``) and a unified
(v2) hierarchy beside it; systemd is not PID 1, so "a systemd service" is made by hand the way
systemd would: a ``system.slice/demo.service`` directory with the process's pid written to its
``cgroup.procs``. Each test runs once per hierarchy found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostagent.identity.naming import parse_service_rules
from hostagent.identity.procfs import ProcFS
from hostagent.identity.service import ServiceCache
from tests.support.cgroups import cgroup_dirs, hierarchies

pytestmark = pytest.mark.root


HIERARCHIES = hierarchies()


@pytest.fixture(params=HIERARCHIES, ids=[h[0] for h in HIERARCHIES])
def demo_unit(request: pytest.FixtureRequest) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create cgroups")
    mount = Path(request.param[1])
    unit = mount / "system.slice" / "demo.service"
    with cgroup_dirs(unit.parent, unit):
        yield unit


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``sleep 60`` and wait until its exec has finished: Popen (vfork) returns while the
    kernel is still building the new image, when /proc/PID/environ and cmdline read empty. The
    daemon has no such window: sched_process_exec fires once the image is complete."""
    proc = subprocess.Popen(["sleep", "60"], env={"PATH": "/usr/bin:/bin", **env})
    deadline = time.monotonic() + 5
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.002)
    return proc


def _start_in(unit: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = _spawn(env)
    (unit / "cgroup.procs").write_text(str(proc.pid))
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


def test_process_in_demo_service_is_named_demo(demo_unit: Path) -> None:
    proc = _start_in(demo_unit, {})
    try:
        cache = ServiceCache(ProcFS("/"))
        service = cache.service_for(proc.pid)
        attrs = service.attributes_dict()
        assert (service.name, service.decided_by) == ("demo", "systemd_unit")
        assert attrs["hostagent.systemd.unit"] == "demo.service"
        assert attrs["hostagent.systemd.slice"] == "system.slice"
        assert attrs["process.executable.path"] in ("/usr/bin/sleep", "/bin/sleep")
        assert attrs["process.command_args"] == ("sleep", "60")
        assert attrs["process.parent_pid"] == os.getpid()
        assert attrs["process.owner"] == "root"
    finally:
        _stop(proc)


def test_otel_service_name_beats_the_unit(demo_unit: Path) -> None:
    proc = _start_in(demo_unit, {"OTEL_SERVICE_NAME": "orders"})
    try:
        service = ServiceCache(ProcFS("/")).service_for(proc.pid)
        assert (service.name, service.decided_by) == ("orders", "OTEL_SERVICE_NAME")
        assert service.attributes_dict()["hostagent.systemd.unit"] == "demo.service"
    finally:
        _stop(proc)


def test_config_rule_overrides_everything(demo_unit: Path) -> None:
    proc = _start_in(demo_unit, {"OTEL_SERVICE_NAME": "orders"})
    try:
        rules = parse_service_rules(
            [{"name": "from-config", "namespace": "ops", "systemd_unit": "demo"}], "t.toml"
        )
        service = ServiceCache(ProcFS("/"), rules=rules).service_for(proc.pid)
        assert (service.name, service.namespace, service.decided_by) == ("from-config", "ops", "config")
    finally:
        _stop(proc)


def test_short_lived_process_named_from_exec() -> None:
    """A process execs a new program and exits at once: named from what it exec'd (the daemon
    calls on_exec from sched_process_exec; here the test sees the exec in /proc)."""
    code = "import os,sys; sys.stdin.readline(); os.execv('/bin/sleep', ['sleep', '0.3'])"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    cache = ServiceCache(ProcFS("/"))
    try:
        assert cache.service_for(proc.pid).attributes_dict()["process.runtime.name"] == "cpython"
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes() != b"sleep\x000.3\x00":  # exec complete
            assert time.monotonic() < deadline
            time.sleep(0.005)
        cache.on_exec(proc.pid)
    finally:
        proc.wait()
    cache.on_exit(proc.pid)
    service = cache.service_for(proc.pid)  # /proc is gone now: the exec-time identity answers
    assert (service.name, service.attributes_dict()["process.command_args"]) == ("sleep", ("sleep", "0.3"))


def test_pid_reuse_does_not_carry_the_old_name(demo_unit: Path) -> None:
    """A real pid reuse, forced with /proc/sys/kernel/ns_last_pid."""
    old = _start_in(demo_unit, {})
    cache = ServiceCache(ProcFS("/"))
    assert cache.service_for(old.pid).name == "demo"
    pid = old.pid
    _stop(old)
    cache.on_exit(pid)
    new = None
    for _ in range(20):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        candidate = _spawn({"OTEL_SERVICE_NAME": "reborn"})
        if candidate.pid == pid:
            new = candidate
            break
        _stop(candidate)
    if new is None:
        pytest.skip("another process took the pid every time")
    try:
        service = cache.service_for(pid)
        assert (service.name, service.decided_by) == ("reborn", "OTEL_SERVICE_NAME")
        assert "hostagent.systemd.unit" not in service.attributes_dict()
    finally:
        _stop(new)
