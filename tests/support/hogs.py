"""Busy loops standing in for a saturated host: nice-0 processes the tests start and stop by PID."""

from __future__ import annotations

import os
import subprocess
import sys


def start_hogs(per_cpu: int = 1) -> list[subprocess.Popen[bytes]]:
    """``per_cpu`` busy Python loops for each CPU of the machine."""
    count = per_cpu * (os.cpu_count() or 1)
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for h in hogs:
        h.kill()
        h.wait()


def start_hog_on(cpu: int) -> subprocess.Popen[bytes]:
    """One busy loop, kept on ``cpu``."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(hog.pid, {cpu})
    return hog
