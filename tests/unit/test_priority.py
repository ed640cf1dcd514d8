"""hostagent.priority: every thread of the process gets the nice value and the scheduling policy,
later threads inherit them.

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

from hostagent.priority import IdleGuard, set_priority
from tests.support.clock import ManualClock

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("policy, expected", [("normal", os.SCHED_OTHER), ("idle", os.SCHED_IDLE)])
def test_every_existing_thread_and_every_later_one_gets_the_values(policy: str, expected: int) -> None:
    out = _run(f"""
        import os, threading
        from hostagent.priority import set_priority
        from tests.support.threads import thread_nice, thread_policy
        started, stop = threading.Event(), threading.Event()
        before = threading.Thread(target=lambda: (started.set(), stop.wait(5)))
        before.start()
        started.wait(5)
        target = min(os.getpriority(os.PRIO_PROCESS, 0) + 5, 19)
        print(set_priority(target, "{policy}"))
        seen = []
        after = threading.Thread(target=lambda: seen.append((os.getpriority(os.PRIO_PROCESS, 0),
                                                             os.sched_getscheduler(0))))
        after.start()
        after.join()
        nice, policies = thread_nice(os.getpid()), thread_policy(os.getpid())
        stop.set()
        before.join()
        print(target, sorted(set(nice.values())), sorted(set(policies.values())), seen)
    """)
    assert out.returncode == 0, out.stderr
    sentence, check = out.stdout.splitlines()
    target = int(check.split()[0])
    if policy == "idle":
        assert sentence == f"nice {target}, cpu_policy idle on 2 threads (only CPU time no application wants)"
    else:  # the main thread and ``before``
        assert sentence.startswith(f"nice {target}, cpu_policy normal on 2 threads"), sentence
    assert check == f"{target} [{target}] [{expected}] [({target}, {expected})]"


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
            sentence = set_priority(-5)
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
            assert "not applied" in set_priority(0)
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
        set_priority(20)
    with pytest.raises(ValueError, match="cpu_policy must be one of idle, normal, got 'batch'"):
        set_priority(10, "batch")


@pytest.mark.parametrize("value, yields", [(-5, False), (0, False), (1, True), (10, True), (19, True)])
def test_the_bursts_yield_only_above_nice_0(value: int, yields: bool) -> None:
    """At nice <= 0 the agent competes at equal weight: hostagent.yielding's pauses are off there."""
    out = _run(f"""
        from hostagent import priority, yielding
        calls = []
        yielding.sched_yield = lambda: calls.append(1)
        priority.set_priority({value})  # as root: applied
        pause = yielding.CpuYield(after_ns=0)
        pause.start()
        pause()
        print(len(calls))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1" if yields else "0"]


def test_leaving_idle_without_the_capability_is_reported_and_the_yields_stay() -> None:
    """SCHED_IDLE back to normal needs CAP_SYS_NICE: refused, said, and the bursts still yield."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            from hostagent import yielding

            calls: list[int] = []
            yielding.sched_yield = lambda: calls.append(1)  # type: ignore[assignment]
            nice = os.getpriority(os.PRIO_PROCESS, 0)
            assert f"nice {nice}, cpu_policy idle on " in set_priority(nice, "idle")  # threads: see the docstring
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            sentence = set_priority(nice, "normal")
            assert sentence == (f"cpu_policy normal not applied: Operation not permitted (leaving SCHED_IDLE needs "
                                f"CAP_SYS_NICE); threads stay at nice {nice}, cpu_policy idle"), sentence
            assert os.sched_getscheduler(0) == os.SCHED_IDLE
            pause = yielding.CpuYield(after_ns=0)
            pause.start()
            pause()
            assert calls == [1], calls
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


@pytest.mark.parametrize("value, policy, yields", [(0, "idle", True), (-5, "idle", True), (0, "normal", False)])
def test_the_bursts_yield_at_idle_whatever_the_nice(value: int, policy: str, yields: bool) -> None:
    out = _run(f"""
        from hostagent import priority, yielding
        calls = []
        yielding.sched_yield = lambda: calls.append(1)
        priority.set_priority({value}, "{policy}")  # as root: applied
        pause = yielding.CpuYield(after_ns=0)
        pause.start()
        pause()
        print(len(calls))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1" if yields else "0"]


def _guard(policy: list[str], clock: ManualClock) -> tuple[IdleGuard, list[tuple[int, str]]]:
    """An IdleGuard whose priority changes are recorded (and take effect in ``policy[0]``)."""
    applied: list[tuple[int, str]] = []

    def apply(nice: int, name: str) -> str:
        applied.append((nice, name))
        policy[0] = name
        return f"nice {nice}, cpu_policy {name} on 7 threads"

    return IdleGuard(10, apply=apply, policy_now=lambda: policy[0], clock=clock), applied


def test_the_guard_raises_the_agent_while_the_ring_is_half_unread_and_lowers_it_once_calm() -> None:
    clock, policy = ManualClock(100.0), ["idle"]
    guard, applied = _guard(policy, clock)
    assert [guard.observe(b) for b in (0.0, 0.2, 0.49)] == [None, None, None]
    assert applied == []
    assert guard.observe(0.5) == ("behind (50% of the ring unread): nice 10, cpu_policy normal on 7 threads; "
                                  "back at idle after 2 s calm")
    assert applied == [(10, "normal")] and guard.raised and guard.times_raised == 1
    assert guard.observe(0.9) is None  # already raised: nothing asked twice
    assert guard.observe(0.1) is None  # calm from now
    clock.now += 1.9
    assert guard.observe(0.0) is None
    assert guard.observe(0.2) is None  # an eighth or more again: the calm starts over
    clock.now += 5
    assert guard.observe(0.05) is None
    clock.now += 1.99
    assert guard.observe(0.05) is None
    clock.now += 0.01
    assert guard.observe(0.05) == "caught up: nice 10, cpu_policy idle on 7 threads"
    assert applied == [(10, "normal"), (10, "idle")] and not guard.raised


def test_raised_again_within_a_minute_the_guard_waits_twice_as_long_up_to_a_minute() -> None:
    clock, policy = ManualClock(100.0), ["idle"]
    guard, applied = _guard(policy, clock)
    calms = []
    for _ in range(8):  # a host that stays busy: behind again 10 s after each return to idle
        said = guard.observe(0.9)
        assert said is not None and said.startswith("behind (90% of the ring unread)")
        calms.append(guard.calm_s)
        guard.observe(0.0)
        clock.now += guard.calm_s
        assert guard.observe(0.0) is not None and not guard.raised
        clock.now += 10
    assert calms == [2, 4, 8, 16, 32, 60, 60, 60]
    clock.now += 60  # a minute or more after the last return: the host calmed down
    assert guard.observe(0.7) is not None and guard.calm_s == 2
    assert guard.times_raised == 9 and len(applied) == 17


def test_a_guard_that_cannot_leave_idle_says_so_once_and_stops_asking() -> None:
    clock, applied = ManualClock(100.0), []

    def refuse(nice: int, name: str) -> str:
        applied.append((nice, name))
        return "cpu_policy normal not applied: Operation not permitted (leaving SCHED_IDLE needs CAP_SYS_NICE)"

    guard = IdleGuard(10, apply=refuse, policy_now=lambda: "idle", clock=clock)
    said = guard.observe(0.75)
    assert said == ("the ring is 75% unread but the agent cannot leave SCHED_IDLE (cpu_policy normal not applied: "
                    "Operation not permitted (leaving SCHED_IDLE needs CAP_SYS_NICE)); it stays there and what it "
                    "cannot keep up with is dropped, counted")
    assert guard.refused and not guard.raised
    assert [guard.observe(b) for b in (0.9, 1.0, 0.0)] == [None, None, None]
    assert applied == [(10, "normal")]


def test_held_while_hopelessly_behind_the_guard_lowers_at_once_and_does_not_raise() -> None:
    clock, policy = ManualClock(100.0), ["idle"]
    guard, applied = _guard(policy, clock)
    assert guard.full_effort is False
    assert guard.observe(0.9) is not None and guard.full_effort
    assert guard.hold(True) == "overloaded, not competing: nice 10, cpu_policy idle on 7 threads"
    assert applied == [(10, "normal"), (10, "idle")] and not guard.raised and not guard.full_effort
    assert guard.hold(True) is None  # already held
    assert [guard.observe(b) for b in (0.9, 1.0)] == [None, None]  # the ring full: still not raised
    assert applied == [(10, "normal"), (10, "idle")]
    assert guard.hold(False) is None  # released: nothing applied until the ring says so
    said = guard.observe(0.9)
    assert said is not None and said.startswith("behind (90% of the ring unread)")
    assert applied[-1] == (10, "normal") and guard.raised


def test_a_guard_that_cannot_leave_idle_is_at_its_full_effort() -> None:
    guard = IdleGuard(10, apply=lambda n, p: "refused", policy_now=lambda: "idle", clock=ManualClock(100.0))
    guard.observe(0.9)
    assert guard.refused and guard.full_effort
