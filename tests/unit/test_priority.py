"""hostagent.priority: every thread of the process gets the nice value, later threads inherit it.

Each case runs in another process (nice cannot be lowered again without CAP_SYS_NICE, and the test
process must keep its own); the thread counts in a fresh interpreter, since a process forked from
pytest carries the fork handlers of libraries earlier tests imported (grpc's starts threads in the
child) that would race with them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

from hostagent.priority import set_nice

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_every_existing_thread_and_every_later_one_gets_the_value() -> None:
    out = _run("""
        import os, threading
        from hostagent.priority import set_nice
        from tests.support.threads import thread_nice
        started, stop = threading.Event(), threading.Event()
        before = threading.Thread(target=lambda: (started.set(), stop.wait(5)))
        before.start()
        started.wait(5)
        target = min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)
        print(set_nice(target))
        seen = []
        after = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
        after.start()
        after.join()
        values = thread_nice(os.getpid())
        stop.set()
        before.join()
        print(target, sorted(set(values.values())), seen)
    """)
    assert out.returncode == 0, out.stderr
    sentence, check = out.stdout.splitlines()
    target = int(check.split()[0])
    assert sentence.startswith(f"nice {target} on 2 threads"), sentence  # the main thread and ``before``
    assert check == f"{target} [{target}] [{target}]"


def test_raising_priority_without_the_capability_is_reported_not_raised() -> None:
    # Forked, not a fresh interpreter: nobody could not run a venv under a 0700 checkout (CI's
    # mktemp -d). Nothing here counts threads, so fork handlers of other libraries do not matter.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            if os.geteuid() == 0:  # root may raise its priority (CAP_SYS_NICE): nobody may not
                os.setgid(65534)
                os.setuid(65534)
            current = os.getpriority(os.PRIO_PROCESS, 0)
            sentence = set_nice(-5)
            assert "not applied" in sentence and "CAP_SYS_NICE" in sentence, sentence
            assert os.getpriority(os.PRIO_PROCESS, 0) == current
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_refused_value_leaves_the_yields_as_the_nice_the_threads_kept() -> None:
    """nice 5, then 0 asked without CAP_SYS_NICE: the threads stay at 5, so the bursts still yield."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            from hostagent import yielding

            calls: list[int] = []
            yielding.sched_yield = lambda: calls.append(1)  # type: ignore[assignment]
            os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), 5))
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            assert "not applied" in set_nice(0)
            pause = yielding.CpuYield(after_ns=0)
            pause.start()
            pause()
            assert calls == [1], calls
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="from -20 to 19"):
        set_nice(20)


@pytest.mark.parametrize("value, yields", [(-5, False), (0, False), (1, True), (10, True), (19, True)])
def test_the_bursts_yield_only_above_nice_0(value: int, yields: bool) -> None:
    """At nice <= 0 the agent competes at equal weight: hostagent.yielding's pauses are off there."""
    out = _run(f"""
        from hostagent import priority, yielding
        calls = []
        yielding.sched_yield = lambda: calls.append(1)
        priority.set_nice({value})  # as root: applied
        pause = yielding.CpuYield(after_ns=0)
        pause.start()
        pause()
        print(len(calls))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1" if yields else "0"]
