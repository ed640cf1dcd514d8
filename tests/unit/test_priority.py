"""hostagent.priority: every thread of the process gets the nice value, later threads inherit it."""

from __future__ import annotations

import os
import re
import threading
import traceback

import pytest

from hostagent.priority import set_nice, thread_nice


def _in_child(fn: object) -> int:
    """Runs ``fn`` in a forked child (nice cannot be lowered again without CAP_SYS_NICE, and the
    test process must keep its own); returns the child's exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            fn()  # type: ignore[operator]
            os._exit(0)
        except BaseException:
            traceback.print_exc()  # shown by pytest with the failure (the child's stderr is captured)
            os._exit(1)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_every_existing_thread_and_every_later_one_gets_the_value() -> None:
    def child() -> None:
        started = threading.Event()
        stop = threading.Event()
        before = threading.Thread(target=lambda: (started.set(), stop.wait(5)))
        before.start()
        started.wait(5)
        base = os.getpriority(os.PRIO_PROCESS, 0)
        target = min(base + 5, 19)
        # the forked child's thread and ``before`` at least; a library's fork handler (grpc's, once a
        # test imported it) may start more meanwhile, so the counts are lower bounds
        threads = len(os.listdir("/proc/self/task"))
        sentence = set_nice(target)
        m = re.search(rf"nice {target} on (\d+) threads", sentence)
        assert threads >= 2 and m is not None and int(m.group(1)) >= threads, sentence
        seen: list[int] = []
        after = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))
        after.start()
        after.join()
        values = thread_nice(os.getpid())
        stop.set()
        before.join()
        # a joined thread can still be listed for a moment after join(): every one listed counts
        assert len(values) >= threads and set(values.values()) == {target}, values
        assert seen == [target]

    assert _in_child(child) == 0


def test_raising_priority_without_the_capability_is_reported_not_raised() -> None:
    def child() -> None:
        if os.geteuid() == 0:  # root may raise its priority (CAP_SYS_NICE): become nobody first
            os.setgid(65534)
            os.setuid(65534)
        current = os.getpriority(os.PRIO_PROCESS, 0)
        sentence = set_nice(-5)
        assert "not applied" in sentence and "CAP_SYS_NICE" in sentence, sentence
        assert os.getpriority(os.PRIO_PROCESS, 0) == current

    assert _in_child(child) == 0


def test_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="from -20 to 19"):
        set_nice(20)
