"""Kernel time spent in the agent's BPF programs, from the kernel's own counters.

With ``kernel.bpf_stats_enabled=1`` the kernel accounts each program's run count and run time
(``run_cnt`` / ``run_time_ns`` in the fdinfo of a program fd). That is the figure OBI quotes
("about 500 ns of probe time per request"): the time the traced processes spend inside our
programs, which no user-space CPU figure of the agent shows. The counters cost two clock reads
per program run themselves, so they are switched on only around the measured window.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hostagent.probes.fdinfo import read_fdinfo

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


def read_prog_stats(fd: int, pid: str = "self") -> tuple[int, int]:
    """(run_cnt, run_time_ns) of one program fd; (0, 0) when the kernel does not count."""
    info = read_fdinfo(fd, pid)
    return int(info.get("run_cnt", 0)), int(info.get("run_time_ns", 0))


def snapshot(fds: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Program name -> (run_cnt, run_time_ns); names may share a program (summed)."""
    out: dict[str, tuple[int, int]] = {}
    for name, fd in fds.items():
        cnt, ns = read_prog_stats(fd)
        old = out.get(name, (0, 0))
        out[name] = (old[0] + cnt, old[1] + ns)
    return out


def per_request(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                requests: int) -> dict[str, object]:
    """Nanoseconds of program time per request, in total and per program (largest first)."""
    progs = []
    total_ns = 0
    for name, (cnt1, ns1) in after.items():
        cnt0, ns0 = before.get(name, (0, 0))
        runs, ns = cnt1 - cnt0, ns1 - ns0
        if runs <= 0:
            continue
        total_ns += ns
        progs.append({"program": name, "runs_per_request": round(runs / max(requests, 1), 2),
                      "ns_per_run": round(ns / runs), "ns_per_request": round(ns / max(requests, 1))})
    progs.sort(key=lambda p: -int(p["ns_per_request"]))  # type: ignore[call-overload]
    return {"ns_per_request": round(total_ns / max(requests, 1)), "programs": progs}


@contextmanager
def stats_enabled() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the block, then back to what it was."""
    old = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("1")
    try:
        yield
    finally:
        STATS_SYSCTL.write_text(old or "0")
