"""The real hostagent daemon as a benchmark subject: start (timed to READY=1), measure, stop.

Started the way systemd would (``NOTIFY_SOCKET`` set), optionally pinned with taskset. The
notify messages are timestamped as they arrive so start-to-READY is measured from outside.
Drops come from the daemon itself: the last ``STATUS=`` line ("N dropped") while it runs and the
"stopped; dropped: {...}" line it logs at shutdown (drops by cause, after the final flush).
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from bench.procs import all_children, cpu_seconds, memory_kib, pinned, reaped_cpu_seconds
from bench.procs import stop as stop_proc
from tests.support.agent import write_config

REPO = Path(__file__).resolve().parents[1]


class Notify:
    """A datagram socket standing where systemd's NOTIFY_SOCKET would; keeps (time, line)."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().splitlines())

    def first(self, line: str) -> Optional[float]:
        return next((t for t, m in list(self.messages) if m == line), None)

    def last_status(self) -> str:
        return next((m for _, m in reversed(list(self.messages)) if m.startswith("STATUS=")), "")

    def close(self) -> None:
        self._closed = True
        self.sock.close()


class BenchAgent:
    def __init__(self, workdir: Path, endpoint: str, *, runtime_dir: Optional[Path] = None,
                 probes: tuple[str, ...] = ("http",), cpus: Optional[str] = None,
                 pin_after_ready: bool = True,
                 extra: Optional[dict[str, dict[str, Any]]] = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "agent": {"state_dir": str(workdir / "state"),
                      "runtime_dir": str(runtime_dir or workdir / "run"),
                      "log_level": "info", "console": "off"},
            # metrics as shipped: RED metrics recorded per call, exported every 15 s (the sink
            # accepts them)
            "exporter": {"endpoint": endpoint, "protocol": "grpc", "timeout_ms": 5000},
            "admin": {"socket": str(workdir / "admin.sock")},
            "probes": {"enabled": list(probes)},
        }
        for section, keys in (extra or {}).items():
            sections.setdefault(section, {}).update(keys)
        self.config = write_config(workdir / "hostagent.toml", sections)  # type: ignore[arg-type]
        self.cpus = cpus
        # Start on every CPU (bcc's compile is timed as a real start would run), then pin every
        # thread once READY: the measured steady state runs on ``cpus`` only.
        self.pin_after_ready = pin_after_ready
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.notify: Optional[Notify] = None
        self.log_path = workdir / "agent.log"
        self.t_start = 0.0
        self.ready_s = 0.0
        self.rss_after_start_kib = 0
        self.final_drops: dict[str, int] = {}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> BenchAgent:
        self.notify = Notify(self.workdir / "notify.sock")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update({"NOTIFY_SOCKET": str(self.workdir / "notify.sock"), "PYTHONUNBUFFERED": "1"})
        log = open(self.log_path, "wb")
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen(pinned([sys.executable, "-m", "hostagent", "run", "--config",
                                             str(self.config)], None if self.pin_after_ready else self.cpus),
                                     cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = self.t_start + timeout
        while time.monotonic() < deadline:
            t = self.notify.first("READY=1")
            if t is not None:
                self.ready_s = t - self.t_start
                self.rss_after_start_kib = self.memory()["rss_kib"]
                if self.cpus and self.pin_after_ready:
                    for pid in self.pids():  # the export process too
                        subprocess.run(["taskset", "-a", "-pc", self.cpus, str(pid)], capture_output=True, check=True)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"agent not READY within {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self) -> list[int]:
        """The agent and its export process ([exporter] process): what the agent costs is both."""
        return [self.pid, *all_children(self.pid)]

    def cpu_seconds(self) -> float:
        """All threads of the agent and of its children, and of the children it reaped (an export
        process restarted)."""
        return sum(cpu_seconds(p) for p in self.pids()) + reaped_cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        """RSS and peak RSS summed over the agent and its export process (pages they share, the
        interpreter's, counted twice: an upper bound)."""
        total = {"rss_kib": 0, "peak_rss_kib": 0}
        for p in self.pids():
            for k, v in memory_kib(p).items():
                total[k] += v
        return total

    def status_dropped(self) -> int:
        m = re.search(r"(\d+) dropped", self.notify.last_status() if self.notify else "")
        return int(m.group(1)) if m else 0

    def stop(self) -> dict[str, int]:
        """SIGTERM (drain and flush), then the drops by cause from the shutdown log line."""
        if self.proc is not None:
            stop_proc(self.proc, timeout=30)
        if self.notify is not None:
            self.notify.close()
        m = re.search(r"stopped; dropped: (.*?); partly captured: ", self.log(), re.M)
        if m and m.group(1).strip() != "nothing":
            self.final_drops = {k: int(v) for k, v in ast.literal_eval(m.group(1).strip()).items()}
        return self.final_drops

    def timings(self) -> dict[str, float]:
        """Start-up phases the daemon logs (seconds): headers, compile, attach."""
        text = self.log()
        out: dict[str, float] = {}
        m = re.search(r"compiled bpf/capture.c in ([\d.]+) s", text)
        if m:
            out["compile_s"] = float(m.group(1))
        attach = [float(x) for x in re.findall(r"attached group \w+: .* in ([\d.]+) s", text)]
        if attach:
            out["attach_s"] = sum(attach)
        return out
