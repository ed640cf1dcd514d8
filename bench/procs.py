"""Process helpers for the benchmarks: CPU pinning, CPU time and memory read from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from hostagent.identity.procfs import stat_fields
from hostagent.memory import status_kib

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinned(cmd: list[str], cpus: Optional[str]) -> list[str]:
    """``cmd`` under ``taskset -c cpus`` (no pinning when cpus is None)."""
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


def cpu_seconds(pid: int) -> float:
    """user+sys seconds of the whole process (all threads) so far; 0 when it is gone."""
    try:
        fields = stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def reaped_cpu_seconds(pid: int) -> float:
    """user+sys seconds of the children ``pid`` has waited for (a restarted export process's
    predecessor); 0 when it is gone."""
    try:
        fields = stat_fields(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0
    return (int(fields[13]) + int(fields[14])) / CLK_TCK  # cutime, cstime (fields 16, 17)


def all_children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (``children`` lists the main thread's only: the agent's
    export process, restarted, is its export thread's)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak RSS) in KiB."""
    status = status_kib(str(pid))
    return {"rss_kib": status.get("VmRSS", 0), "peak_rss_kib": status.get("VmHWM", 0)}


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> Optional[int]:
    """SIGTERM the process we started (by its pid), SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_until(cond, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())
