"""The nice value of each thread of a process, as the tests of [agent] nice read it."""

from __future__ import annotations

from pathlib import Path

from hostagent.identity.procfs import stat_fields
from hostagent.priority import thread_ids


def thread_nice(pid: int, proc: Path = Path("/proc")) -> dict[int, int]:
    """tid -> nice of each thread of ``pid`` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    out: dict[int, int] = {}
    for tid in thread_ids(proc / str(pid) / "task"):
        try:
            stat = (proc / str(pid) / "task" / str(tid) / "stat").read_text()
        except OSError:
            continue
        out[tid] = int(stat_fields(stat)[16])
    return out
