"""Start-up of the real daemon: bcc's compile runs on its own thread while the rest is built,
and a compile that fails still ends the start with bcc's error and exit status 1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostagent.kernel.headers import find_kernel_headers
from tests.support.agent import REPO, Agent, write_config

pytestmark = pytest.mark.root

ADMIN_UP = "admin API listening on"
COMPILED = re.compile(r"compiled bpf/capture\.c in ([\d.]+) s")
START_UP = re.compile(
    r"start-up: READY ([\d.]+) s after the process began; the bcc compile started at ([\d.]+) s \(kernel checks "
    r"([\d.]+) s\) and took ([\d.]+) s on its own thread while the pipeline and admin server were built "
    r"\(([\d.]+) s\); waited ([\d.]+) s for it; attach ([\d.]+) s; memory handed back in ([\d.]+) s: "
    r"RSS (\d+) -> (\d+) MiB \((\d+) MiB of compiler code paged out\); (\d+) start-up objects frozen out of "
    r"the cyclic GC")


def test_the_pipeline_and_admin_server_are_built_while_bcc_compiles(tmp_path: Path) -> None:
    agent = Agent(tmp_path, "127.0.0.1:9", extra={"exporter": {"metrics": False}}).start()
    try:
        log = agent.log()
        lines = log.splitlines()
        admin = next(i for i, line in enumerate(lines) if ADMIN_UP in line)
        compiled = next(i for i, line in enumerate(lines) if COMPILED.search(line))
        assert admin < compiled, log  # the admin server was up before the compile was over
        m = START_UP.search(log)
        assert m is not None, log
        total, began, kernel, compile_s, built, waited, attach, handed = (float(x) for x in m.groups()[:8])
        rss_before, rss_after = int(m.group(9)), int(m.group(10))
        assert compile_s == float(COMPILED.search(log).group(1))  # type: ignore[union-attr]
        # the main thread built the pipeline meanwhile, so it waited less than the compile lasted
        assert waited < compile_s
        # the log gives each figure to 0.01 s: six roundings of up to 0.005 s each
        assert total >= began + built + waited + attach + handed - 6 * 0.005
        assert rss_after <= rss_before
        assert int(m.group(12)) > 10_000  # the start's objects (modules, caches) left out of the GC
        assert began >= kernel  # the compile starts once the kernel checks chose the headers
        assert agent.notify is not None and "READY=1" in agent.notify.lines()
    finally:
        assert agent.stop() == 0


def broken_header_tree(runtime_dir: Path) -> Path:
    """The merged header tree the daemon would use, built under runtime_dir and then emptied but
    for its stamp: the daemon reuses it as it is and clang finds no kernel header in it."""
    choice = find_kernel_headers(None, runtime_dir, set_env=False)
    if not str(choice.path).startswith(str(runtime_dir)):
        pytest.skip(f"headers at {choice.path} are used in place (no merged tree to break)")
    for entry in choice.path.iterdir():
        if entry.name != ".hostagent-merged":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return choice.path


def test_a_compile_failure_is_bccs_error_and_exit_status_1(tmp_path: Path) -> None:
    runtime_dir = tmp_path / "run"
    broken_header_tree(runtime_dir)
    config = write_config(tmp_path / "hostagent.toml", {
        "agent": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(runtime_dir), "console": "off"},
        "exporter": {"endpoint": "127.0.0.1:9", "metrics": False, "timeout_ms": 500},
        "admin": {"socket": str(tmp_path / "admin.sock")},
        "probes": {"enabled": ["http"]},
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NOTIFY_SOCKET", "BCC_"))}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hostagent", "run", "--config", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.rstrip().endswith("Exception: Failed to compile BPF module <text>"), proc.stderr
    assert "fatal error:" in proc.stderr  # clang's own diagnostics, as bcc printed them
    assert "probes attached" not in proc.stderr and "ready:" not in proc.stderr
    assert "stopping: detaching probes and flushing spans" in proc.stderr  # threads stopped: no hang
    assert time.monotonic() - t0 < 60
