"""The agent's CPU priority: under contention the traced applications come first.

An observability agent that competes with the workload at equal weight takes CPU from the very
applications it measures (bench/README: Flask under gunicorn lost a third of its throughput to
an agent at nice 0, a sixth at nice 10). ``[agent] nice`` lowers the weight of every thread of
the agent once it is READY; what it cannot process in time is dropped in the kernel and counted
(``kernel_ringbuf_full``), never lost silently. On an idle or partly idle host nothing changes:
nice only matters when a CPU has more runnable threads than it can serve.

Linux keeps a nice value per thread (``setpriority(PRIO_PROCESS, tid)``), and a new thread starts
with its creator's: every thread that exists is set here, and the threads started later (gRPC's,
the exporter's retries) inherit the value. The bcc compile at start-up runs before this, at the
priority the agent was started with, so READY is not delayed on a busy host. Above 0 the agent's
long bursts also hand the CPU back every 250 us (``hostagent.yielding``): a nice value weighs
the CPU's share, not how long a woken thread keeps it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hostagent.yielding import set_enabled as set_yielding

NICE_MIN, NICE_MAX = -20, 19


def thread_ids(proc: Path = Path("/proc/self/task")) -> list[int]:
    try:
        return sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
    except OSError:
        return [os.getpid()]


def set_nice(value: int) -> str:
    """Sets ``value`` on every thread of this process; returns a sentence for the log.

    Raising the priority (a value below the current one) needs CAP_SYS_NICE; without it the
    threads keep their priority and the sentence says why. A thread that exits meanwhile is
    skipped."""
    if not NICE_MIN <= value <= NICE_MAX:
        raise ValueError(f"nice must be from {NICE_MIN} to {NICE_MAX}, got {value}")
    done, refused = 0, ""
    for tid in thread_ids():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, value)
            done += 1
        except ProcessLookupError:
            continue
        except PermissionError as e:
            current = os.getpriority(os.PRIO_PROCESS, 0)
            why = ("raising priority needs CAP_SYS_NICE" if value < current
                   else "setpriority refused: a seccomp filter without setpriority?")
            refused = f"{e.strerror} ({why})"
            break
    # the other half of "the applications first" (hostagent.yielding), by the nice the threads
    # have: a refused value leaves them at their own
    set_yielding(os.getpriority(os.PRIO_PROCESS, 0) > 0)
    if refused:
        return f"nice {value} not applied: {refused}; threads stay at nice {os.getpriority(os.PRIO_PROCESS, 0)}"
    return f"nice {value} on {done} threads ([agent] nice: the traced applications come first under CPU contention)"

