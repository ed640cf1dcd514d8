"""Runs the real hostagent daemon as a subprocess, the way systemd would (NOTIFY_SOCKET set)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

from tests.support.notify_socket import NotifySocket

REPO = Path(__file__).resolve().parents[2]
HOSTAGENT = [sys.executable, "-m", "hostagent"]
SHARED_RUNTIME_DIR = "/dev/shm/hostagent-test-run"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(value)


Sections = dict[str, Union[dict[str, Any], list[dict[str, Any]]]]


def write_config(path: Path, sections: Sections) -> Path:
    """A dict value is a ``[name]`` table; a list of dicts is an array of ``[[name]]`` tables
    (e.g. ``{"services": [{"name": "payments", "cmdline": "..."}]}``)."""
    lines = []
    for section, keys in sections.items():
        tables = keys if isinstance(keys, list) else [keys]
        header = f"[[{section}]]" if isinstance(keys, list) else f"[{section}]"
        for table in tables:
            lines.append(header)
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items())
            lines.append("")
    path.write_text("\n".join(lines))
    return path


class Agent:
    """One daemon process with its own state/runtime dirs under ``workdir``."""

    # The agents of this test session still running: a failed test reports what they dropped
    # (tests/conftest.py), since on a loaded host "no span came" is most often a full ring.
    running: ClassVar[set[Agent]] = set()

    def __init__(self, workdir: Path, otlp_endpoint: str, extra: Optional[Sections] = None,
                 env: Optional[dict[str, str]] = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        sections: Sections = {
            # runtime_dir on tmpfs, shared by every test agent: the merged kernel-header tree is
            # built there once (seconds on disk, a fraction of one on tmpfs) and reused.
            "agent": {"state_dir": str(workdir / "state"), "runtime_dir": SHARED_RUNTIME_DIR,
                      "log_level": "info", "console": "off"},
            "exporter": {"endpoint": otlp_endpoint, "protocol": "grpc", "timeout_ms": 2000},
            "admin": {"socket": str(workdir / "run" / "admin.sock")},
            "probes": {"enabled": ["http"]},
        }
        for section, keys in (extra or {}).items():
            table = sections.setdefault(section, {} if isinstance(keys, dict) else [])
            if isinstance(table, dict) and isinstance(keys, dict):
                table.update(keys)
            else:  # arrays of tables ([[services]]) are given whole
                sections[section] = list(keys) if isinstance(keys, list) else keys
        self.config = write_config(workdir / "hostagent.toml", sections)
        self.env = env or {}
        self.notify: Optional[NotifySocket] = None
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = workdir / "agent.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait_ready: bool = True, timeout: float = 90.0) -> Agent:
        sock_path = self.workdir / "notify.sock"
        if sock_path.exists():
            sock_path.unlink()
        self.notify = NotifySocket(sock_path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update({"NOTIFY_SOCKET": str(sock_path), "PYTHONUNBUFFERED": "1", **self.env})
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*HOSTAGENT, "run", "--config", str(self.config)], cwd=REPO,
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT)
        Agent.running.add(self)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0, after: int = 0) -> int:
        assert self.notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.notify.wait_for("READY=1", timeout=0.5, after=after)
            except AssertionError:
                continue
        raise AssertionError(f"agent not READY within {timeout}s:\n{self.log()}")

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload` sends it; returns once the agent says RELOADING=1 and then
        READY=1 (the new settings applied)."""
        assert self.notify is not None
        mark = len(self.notify.lines())
        self.signal(signal.SIGHUP)
        reloading = self.notify.wait_for("RELOADING=1", after=mark)
        self.notify.wait_for("READY=1", after=reloading)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def drops(self) -> str:
        """The running agent's drop and capture-loss counters, from its admin API ("" when it
        cannot answer), for a failed test's report."""
        out = subprocess.run([sys.executable, "-m", "control", "--socket", str(self.workdir / "run" / "admin.sock"),
                              "status", "-o", "json"], cwd=REPO, capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return ""
        drops = json.loads(out.stdout).get("drops") or {}
        return ", ".join(f"{cause} {count}" for cause, count in sorted(drops.items()) if count) or "none"

    def stop(self, timeout: float = 30.0) -> int:
        Agent.running.discard(self)
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"agent did not stop within {timeout}s:\n{self.log()}") from None
        if self.notify is not None:
            self.notify.close()
        self._log.close()
        return self.proc.returncode
