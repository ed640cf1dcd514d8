"""hostagent.starvation and IdleGuard.starved: work that waited a second raises the agent at
cpu_policy idle, whatever the ring's fill; the guard's calm rule lowers it again. A fake clock."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hostagent.config import Config
from hostagent.daemon import Agent
from hostagent.export.queue import ExportQueue
from hostagent.priority import IdleGuard
from hostagent.starvation import MAX_SAMPLES, RingAge, StarvationWatch
from tests.support.clock import ManualClock

REPO = Path(__file__).resolve().parents[2]
RAISED = "nice 10, cpu_policy normal on 7 threads"


def _guard(clock: ManualClock, refuse: bool = False) -> tuple[IdleGuard, list[str]]:
    applied: list[str] = []
    policy = ["idle"]

    def apply(nice: int, name: str) -> str:
        applied.append(name)
        if refuse:
            return "cpu_policy normal not applied: Operation not permitted"
        policy[0] = name
        return f"nice {nice}, cpu_policy {name} on 7 threads"

    return IdleGuard(10, apply=apply, policy_now=lambda: policy[0], clock=clock), applied


# (state before, what waited, seconds) -> the sentence, or None when nothing is asked
@pytest.mark.parametrize("state, what, waited, said", [
    ("idle", "the oldest unread event", 0.0, None),
    ("idle", "the oldest unread event", 0.99, None),  # under a second: SCHED_IDLE keeps the app fast
    ("idle", "the oldest unread event", 1.0,
     f"starved (the oldest unread event waited 1.0 s): {RAISED}; back at idle after 2 s calm"),
    ("idle", "the poll loop", 42.5, f"starved (the poll loop waited 42.5 s): {RAISED}; back at idle after 2 s calm"),
    ("idle", "spans due for export", 3.04,
     f"starved (spans due for export waited 3.0 s): {RAISED}; back at idle after 2 s calm"),
    ("raised", "the poll loop", 9.0, None),  # raised already (by the ring's fill): nothing asked twice
    ("held", "the poll loop", 9.0, None),  # hopelessly behind: the backoff keeps it at idle
])
def test_starved_raises_once_work_waited_a_second(state: str, what: str, waited: float, said: Optional[str]) -> None:
    clock = ManualClock(100.0)
    guard, applied = _guard(clock)
    if state == "raised":
        assert guard.observe(0.9) is not None
    if state == "held":
        guard.hold(True)
    before = list(applied)
    assert guard.starved(what, waited) == said
    assert applied == before + (["normal"] if said else [])
    assert guard.raised == (said is not None or state == "raised")
    assert guard.times_starved == (1 if said else 0)


def test_raised_by_starvation_the_guard_lowers_by_its_calm_rule_and_doubles_it_when_starved_again() -> None:
    clock = ManualClock(100.0)
    guard, applied = _guard(clock)
    assert guard.starved("the oldest unread event", 1.2) is not None
    assert guard.observe(0.0) is None  # the loop runs again, but the watch last saw 1.2 s
    assert guard.starved("the oldest unread event", 0.1) is None  # its next tick: read
    assert guard.observe(0.0) is None  # calm from now
    clock.now += 1.99
    assert guard.observe(0.0) is None
    clock.now += 0.01
    assert guard.observe(0.0) == "caught up: nice 10, cpu_policy idle on 7 threads"
    clock.now += 5  # the host stays busy: starved again within a minute
    said = guard.starved("the poll loop", 1.5)
    assert said == f"starved (the poll loop waited 1.5 s): {RAISED}; back at idle after 4 s calm"
    assert applied == ["normal", "idle", "normal"]
    assert (guard.times_raised, guard.times_starved) == (2, 2)


def test_a_guard_that_cannot_leave_idle_says_so_once_when_starved() -> None:
    guard, applied = _guard(ManualClock(100.0), refuse=True)
    said = guard.starved("the oldest unread event", 2.0)
    assert said == ("the oldest unread event waited 2.0 s but the agent cannot leave SCHED_IDLE (cpu_policy normal "
                    "not applied: Operation not permitted); it stays there and what it cannot keep up with is "
                    "dropped, counted")
    assert guard.refused and not guard.raised and guard.times_starved == 0
    assert guard.starved("the poll loop", 30.0) is None
    assert applied == ["normal"]


def test_a_stop_leaves_idle_at_once_for_good() -> None:
    """The watch stops with the poll loop; the stop itself (bounded, a few seconds) runs raised, so
    that a busy host cannot stretch it past systemd's stop timeout."""
    clock = ManualClock(100.0)
    guard, applied = _guard(clock)
    assert guard.stopping() == f"stopping: {RAISED} until the end"
    assert guard.raised and applied == ["normal"] and guard.times_starved == 0
    assert guard.stopping() is None and applied == ["normal"]
    # already raised by a floor: nothing to change, nothing said
    raised, applied = _guard(clock)
    assert raised.observe(0.9) is not None and applied == ["normal"]
    assert raised.stopping() is None and applied == ["normal"]
    refused, applied = _guard(clock, refuse=True)
    assert refused.stopping() == ("stopping at SCHED_IDLE: the agent cannot leave it (cpu_policy normal not "
                                  "applied: Operation not permitted)")
    assert refused.refused and refused.stopping() is None and applied == ["normal"]


# each step: (now, producer position, consumer position) -> the oldest unread record's age
@pytest.mark.parametrize("steps", [
    pytest.param([(0.0, 0, 0, 0.0), (0.25, 0, 0, 0.0)], id="nothing written"),
    pytest.param([(0.0, 64, 0, 0.0), (0.25, 64, 0, 0.25), (1.0, 64, 0, 1.0)], id="one record never read"),
    pytest.param([(0.0, 64, 0, 0.0), (0.25, 128, 64, 0.0), (0.5, 128, 64, 0.25), (0.75, 128, 128, 0.0)],
                 id="read each tick: never older than a tick"),
    pytest.param([(0.0, 64, 0, 0.0), (0.25, 128, 0, 0.25), (0.5, 192, 0, 0.5), (0.75, 192, 64, 0.5),
                  (1.0, 192, 128, 0.5), (1.25, 256, 192, 0.0)],
                 id="a reader behind: the oldest sample still ahead of it says since when"),
    pytest.param([(0.0, 64, 64, 0.0), (3.0, 128, 64, 0.0), (3.25, 128, 64, 0.25)],
                 id="a quiet ring: the wait starts with the record"),
])
def test_ring_age_from_positions(steps: list[tuple[float, int, int, float]]) -> None:
    age = RingAge()
    assert [round(age.sample(now, p, c), 3) for now, p, c, _ in steps] == [want for *_, want in steps]


def test_ring_age_keeps_its_oldest_sample_when_the_reader_never_moves() -> None:
    age = RingAge()
    for i in range(MAX_SAMPLES * 4):
        got = age.sample(i * 0.25, 64 * (i + 1), 0)
    assert got == (MAX_SAMPLES * 4 - 1) * 0.25
    assert len(age._samples) == MAX_SAMPLES


class _Exporter(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def test_export_queue_overdue_counts_only_spans_waiting_for_the_worker() -> None:
    queue = ExportQueue([_Exporter()], delay_s=0.5)  # not started: the worker never wakes
    now = queue._beat
    assert queue.overdue_s(now + 10) == 0.0  # nothing queued: nothing waits
    assert queue.put(object())  # type: ignore[arg-type]
    assert queue.overdue_s(now + 0.4) == 0.0  # within the worker's delay
    assert queue.overdue_s(now + 2.0) == pytest.approx(1.5)
    queue._in_flight = 1  # a batch on its way: a slow collector is not the agent starved
    assert queue.overdue_s(now + 2.0) == 0.0


class _Capture:
    def __init__(self, positions: Optional[tuple[int, int]]) -> None:
        self.positions = positions

    def ring_positions(self) -> Optional[tuple[int, int]]:
        return self.positions


class _Queue:
    def __init__(self, overdue: float) -> None:
        self.overdue = overdue

    def overdue_s(self, now: float) -> float:
        return self.overdue


@pytest.mark.parametrize("beat_ago, ring, overdue, want", [
    (0.0, None, 0.0, "the poll loop"),
    (3.0, (64, 0), 0.0, "the poll loop"),  # the ring sampled just now: its record waited ~0 so far
    (0.1, (64, 0), 2.5, "spans due for export"),
])
def test_the_agent_names_what_waited_longest(beat_ago: float, ring: Optional[tuple[int, int]], overdue: float,
                                             want: str) -> None:
    from hostagent.starvation import RingAge as _RingAge

    agent = Agent(Config())
    agent.capture, agent.queue, agent._ring_age = _Capture(ring), _Queue(overdue), _RingAge()
    agent.heartbeat -= beat_ago
    what, waited = agent.longest_wait()
    assert what == want
    assert waited == pytest.approx(max(beat_ago, overdue), abs=0.05)


def test_the_watch_logs_what_the_guard_did_and_a_failing_check_once(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[tuple[str, float]] = []
    answers = iter(["starved (the poll loop waited 1.2 s): raised", None])
    watch = StarvationWatch(lambda: ("the poll loop", 1.2), lambda w, s: (asked.append((w, s)), next(answers))[1])
    with caplog.at_level(logging.INFO, "hostagent"):
        watch.check()
        watch.check()
    assert asked == [("the poll loop", 1.2)] * 2
    assert [r.getMessage() for r in caplog.records] == ["cpu priority: starved (the poll loop waited 1.2 s): raised"]
    caplog.clear()

    def broken() -> tuple[str, float]:
        raise ValueError("closed")

    failing = StarvationWatch(broken, lambda w, s: None)
    with caplog.at_level(logging.INFO, "hostagent"):
        for _ in range(3):
            failing.check()
    assert [r.getMessage() for r in caplog.records] == ["cpu priority: the starvation watch failed a check"]


def test_a_steady_thread_keeps_sched_other_when_the_others_go_idle() -> None:
    """The watch's thread: set_priority leaves it at SCHED_OTHER, and reads the policy the others have."""
    code = textwrap.dedent("""
        import os, threading
        from hostagent.priority import current_policy, keep_normal_here, release_here, set_priority
        from tests.support.threads import steady_threads, thread_policy
        ready, stop, out = threading.Event(), threading.Event(), {}
        def steady():
            out["refused"] = keep_normal_here("test")
            out["tid"] = threading.get_native_id()
            ready.set()
            stop.wait(5)
            out["said"] = set_priority(os.getpriority(os.PRIO_PROCESS, 0), "idle")  # asked from it
            release_here()
        t = threading.Thread(target=steady)
        t.start()
        ready.wait(5)
        set_priority(os.getpriority(os.PRIO_PROCESS, 0), "idle")
        policies, named = thread_policy(os.getpid()), steady_threads(os.getpid())
        stop.set()
        t.join()
        others = {p for tid, p in policies.items() if tid != out["tid"]}
        print(out["refused"] == "", policies[out["tid"]], sorted(others), "cpu_policy idle on" in out["said"],
              named == {out["tid"]})
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", str(os.SCHED_OTHER), f"[{os.SCHED_IDLE}]", "True", "True"]


def test_the_admin_threads_keep_sched_other_while_the_agent_idles() -> None:
    """A person waiting on hostagentctl: the proxy's threads, gRPC's serving thread and the handler
    stay at SCHED_OTHER (at the agent's nice) when every other thread goes to SCHED_IDLE; each of
    them at SCHED_IDLE beside busy applications made a status call take seconds."""
    code = textwrap.dedent("""
        import os, threading
        from pathlib import Path
        import grpc
        from hostagent import priority
        from hostagent.admin.v1 import admin_pb2 as pb
        from tests.support.threads import steady_threads, thread_policy
        from tests.unit.admin_harness import running, world_dir
        with world_dir() as d, running(d) as h:
            print(priority.set_priority(os.getpriority(os.PRIO_PROCESS, 0), "idle"))
            stub = h.stub()  # the client's threads start at idle: this thread's policy
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).version
            policies = thread_policy(os.getpid())
            steady = priority._STEADY & policies.keys()
            assert steady_threads(os.getpid()) == steady, (steady_threads(os.getpid()), steady)
            print(len(steady), sorted({policies[t] for t in steady}),
                  sorted({p for t, p in policies.items() if t not in steady}))
    """)
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    said, check = run.stdout.splitlines()
    assert "cpu_policy idle on" in said
    steady, policy, others = check.split(" ", 2)
    # the proxy's accept thread and its two relays, gRPC's serving thread, at least one handler
    assert int(steady) >= 5, check
    assert (policy, others) == (f"[{os.SCHED_OTHER}]", f"[{os.SCHED_IDLE}]"), check


def test_the_guard_stays_raised_while_work_still_waits_though_the_ring_is_calm() -> None:
    """An agent reading about as fast as records come: the ring under an eighth, its oldest
    record seconds old. Calm is both."""
    clock = ManualClock(100.0)
    guard, applied = _guard(clock)
    assert guard.observe(0.9) is not None  # raised by the ring's fill
    assert guard.starved("the oldest unread event", 8.0) is None  # raised already: only noted
    for _ in range(5):
        assert guard.observe(0.05) is None
        clock.now += 1
    assert guard.raised
    assert guard.starved("the oldest unread event", 0.25) is None
    assert guard.observe(0.05) is None  # calm from now
    clock.now += 2
    assert guard.observe(0.05) == "caught up: nice 10, cpu_policy idle on 7 threads"
    assert applied == ["normal", "idle"]


def test_starved_after_0_turns_the_second_floor_off_and_leaves_the_ring_floor_alone() -> None:
    clock, applied = ManualClock(100.0), []

    def apply(nice: int, name: str) -> str:
        applied.append(name)
        return f"nice {nice}, cpu_policy {name} on 7 threads"

    policy = {"normal": "normal", "idle": "idle"}
    guard = IdleGuard(10, apply=apply, policy_now=lambda: policy[applied[-1]] if applied else "idle", clock=clock,
                      starved_after_s=0.0)
    assert guard.starved("the poll loop", 60.0) is None and not guard.raised
    assert guard.observe(0.9) is not None  # the ring's floor still raises
    guard.starved("the oldest unread event", 30.0)  # and the watch cannot hold it up
    assert guard.observe(0.0) is None
    clock.now += 2
    assert guard.observe(0.0) == "caught up: nice 10, cpu_policy idle on 7 threads"
    assert applied == ["normal", "idle"]
