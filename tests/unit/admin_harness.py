"""Shared by test_admin_*.py and test_cli*.py: a real AdminServer in-process, the real CLI as a
subprocess. Sockets live in a world-traversable temp dir (pytest's tmp_path is 0700) so that tests
can run the CLI as another user (runuser)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import grpc

from hostagent.admin.server import AdminServer
from hostagent.admin.status import AgentStatus, ProbeStatus, StaticStatus
from hostagent.admin.tap import SpanTap
from hostagent.admin.v1 import admin_pb2_grpc
from hostagent.settings import RuntimeSettings, SettingsHolder

ROOT = Path(__file__).resolve().parents[2]
BASE = RuntimeSettings(probes=frozenset({"http", "dns"}))
STATUS = AgentStatus(
    version="9.9.9-test",
    uptime_seconds=3723.5,
    kernel_release="6.18.0-test",
    kernel_headers="/usr/src/linux-headers-6.1 (nearest)",
    probes=(ProbeStatus("http", "attached"), ProbeStatus("dns", "failed", "no tracepoint sys_enter_sendmmsg")),
    events_per_second=12.5,
    spans_exported=42,
    drops={"ring_buffer": 3, "export_queue": 0},
    exporter_endpoint="http://127.0.0.1:4317",
    exporter_last_error="",
    redacted={"email": 7},
    cpu_effort="backed off: overloaded, working 20% of the time (for 42 s in all)",
    connections={"detected_http": 5, "detected_redis": 2, "rejected_redis": 1, "unknown": 3},
)


@dataclass
class Harness:
    server: AdminServer
    holder: SettingsHolder
    tap: SpanTap
    socket: Path
    state_dir: Path
    reloads: list[int] = field(default_factory=list)
    reload_result: tuple[bool, str] = (True, "")

    def stub(self) -> admin_pb2_grpc.AdminServiceStub:
        return admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(f"unix:{self.socket}"))

    def audit(self) -> list[dict[str, Any]]:
        path = self.state_dir / "audit.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@contextlib.contextmanager
def world_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hostagent-admin-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(
    base_dir: Path,
    base: RuntimeSettings = BASE,
    holder: Optional[SettingsHolder] = None,
    **kwargs: Any,
) -> Iterator[Harness]:
    holder = holder or SettingsHolder(base)
    tap = SpanTap(queue_size=kwargs.pop("queue_size", 64))
    box: dict[str, Harness] = {}

    def reload() -> tuple[bool, str]:
        box["h"].reloads.append(1)
        return box["h"].reload_result

    server = AdminServer(
        holder=holder,
        status=kwargs.pop("status", None) or StaticStatus(STATUS),
        reload=reload,
        base_settings=lambda: base,
        state_dir=base_dir / "state",
        socket_path=base_dir / "run" / "admin.sock",
        tap=tap,
        **kwargs,
    )
    box["h"] = Harness(server, holder, tap, base_dir / "run" / "admin.sock", base_dir / "state")
    server.start()
    try:
        yield box["h"]
    finally:
        server.stop(grace=0.2)


def shim_dir() -> Path:
    """A directory whose `hostagentctl` is the checkout's control/ (the import name the
    package installs), so the CLI runs from source whether or not it is installed."""
    # one shim per checkout: a shim left by another checkout must never run that checkout's code
    digest = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"hostagent-cli-shim-{digest}"
    path.mkdir(exist_ok=True)
    path.chmod(0o755)
    link = path / "hostagentctl"
    if not link.exists():
        with contextlib.suppress(FileExistsError):
            link.symlink_to(ROOT / "control")
    return path


@contextlib.contextmanager
def traversable_by_others(path: Path) -> Iterator[None]:
    """Let another user reach ``path`` (search permission on each ancestor) for the duration.

    A clone made under ``mktemp -d`` is 0700: a CLI run as another user (to test that the agent
    refuses it) would otherwise fail to start at all, and the test would prove nothing.
    """
    changed: list[tuple[Path, int]] = []
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            changed.append((directory, mode))
    try:
        yield
    finally:
        for directory, mode in changed:
            directory.chmod(stat.S_IMODE(mode))


def cli(
    *args: str, user: Optional[str] = None, env: Optional[dict[str, str]] = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOSTAGENT_")}
    environ["PYTHONPATH"] = f"{shim_dir()}:{ROOT}"
    environ.update(env or {})
    cmd = [sys.executable, "-m", "hostagentctl", *args]
    if not user:
        return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=timeout, cwd="/")
    with traversable_by_others(ROOT):
        return subprocess.run(["runuser", "-u", user, "--", *cmd], capture_output=True, text=True, env=environ,
                              timeout=timeout, cwd="/")
