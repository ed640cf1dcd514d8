"""What the kernel says of a BPF object through one of its file descriptors.

``/proc/<pid>/fdinfo/<fd>`` of a program or map fd lists ``key:\\tvalue`` lines: ``prog_id``,
``run_cnt``/``run_time_ns`` (with kernel.bpf_stats_enabled), a map's ``max_entries``, ...
Read in one place for the loader, the ring reader and the benchmarks.
"""

from __future__ import annotations


def read_fdinfo(fd: int, pid: str = "self") -> dict[str, str]:
    """Every ``key: value`` line of the fd's fdinfo (values stripped); OSError if there is none."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                out[key] = value.strip()
    return out
