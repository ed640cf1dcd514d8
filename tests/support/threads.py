"""The nice value and scheduling policy of each thread of a process, as the tests of [agent] nice
and cpu_policy read them."""

from __future__ import annotations

from pathlib import Path

from hostagent.identity.procfs import stat_fields
from hostagent.priority import STEADY_NAME_PREFIX, thread_ids


def thread_nice(pid: int, proc: Path = Path("/proc")) -> dict[int, int]:
    """tid -> nice of each thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    return _thread_field(pid, 16, proc)


def thread_policy(pid: int, proc: Path = Path("/proc")) -> dict[int, int]:
    """tid -> scheduling policy of each thread of ``pid`` (field 41: 0 SCHED_OTHER, 5 SCHED_IDLE)."""
    return _thread_field(pid, 38, proc)


def _thread_field(pid: int, index: int, proc: Path) -> dict[int, int]:
    """tid -> the stat field at ``index`` of stat_fields (fields after the command name)."""
    out: dict[int, int] = {}
    for tid in thread_ids(proc / str(pid) / "task"):
        try:
            stat = (proc / str(pid) / "task" / str(tid) / "stat").read_text()
        except OSError:
            continue
        out[tid] = int(stat_fields(stat)[index])
    return out


def steady_threads(pid: int, proc: Path = Path("/proc")) -> set[int]:
    """The threads of ``pid`` kept at SCHED_OTHER on purpose (hostagent.priority.keep_normal names them)."""
    out: set[int] = set()
    for tid in thread_ids(proc / str(pid) / "task"):
        try:
            if (proc / str(pid) / "task" / str(tid) / "comm").read_text().startswith(STEADY_NAME_PREFIX):
                out.add(tid)
        except OSError:
            continue
    return out


def policies_but_steady(pid: int, proc: Path = Path("/proc")) -> set[int]:
    """The policies of the threads [agent] cpu_policy and the floors move (not the steady ones)."""
    steady = steady_threads(pid, proc)
    return {p for tid, p in thread_policy(pid, proc).items() if tid not in steady}
