"""OverloadBackoff: when it backs off, how long it rests, when it comes back (hostagent.overload)."""

from __future__ import annotations

import pytest

from hostagent.overload import (
    BACKED_OFF,
    BURST_S,
    ENTER_LOSS,
    ENTER_WINDOWS,
    EVIDENT_LOSS,
    MAX_REST_S,
    NORMAL,
    PROBE_EVERY_S,
    PROBING,
    QUICK_MIN_DROPPED,
    QUICK_S,
    TURN_S,
    WINDOW_S,
    OverloadBackoff,
)


class _Feed:
    """Drives a backoff one window (WINDOW_S) at a time with per-window read/dropped counts."""

    def __init__(self, duty: float = 0.2) -> None:
        self.now = 100.0
        self.read = self.dropped = 0
        self.backoff = OverloadBackoff(duty, self.now)
        assert self.backoff.due(self.now)
        assert self.backoff.observe(self.now, 0, 0) is None  # the baseline

    def window(self, read: int, dropped: int, full_effort: bool = True) -> str | None:
        self.backoff.note_effort(True)
        self.backoff.note_effort(full_effort)
        self.now += WINDOW_S
        self.read += read
        self.dropped += dropped
        assert self.backoff.due(self.now)
        return self.backoff.observe(self.now, self.read, self.dropped)


def _saturated(feed: _Feed, n: int = 1) -> list[str | None]:
    return [feed.window(8_000, 142_000) for _ in range(n)]  # nginx at saturation: 95% dropped


def _behind(feed: _Feed, n: int = ENTER_WINDOWS) -> list[str | None]:
    return [feed.window(30_000, 120_000) for _ in range(n)]  # 80% dropped: hopeless, not evidently


def test_one_evidently_hopeless_window_at_full_effort_backs_it_off_and_says_so_once() -> None:
    # nginx at saturation on the bench machine: 93-95% dropped at full effort; three windows of 1 s
    # to see it were a third of the bench's 10 s round at ~0.67 of plain (0.86 backed off)
    feed = _Feed()
    said = _saturated(feed, ENTER_WINDOWS)
    assert said[0] == ("overloaded: 95% of the calls dropped at full effort (300,000/s arriving); working 20% "
                       "of the time until arrivals halve (full effort tried again every 60 s)")
    assert feed.backoff.state == BACKED_OFF and feed.backoff.resting and feed.backoff.times_backed_off == 1
    assert said[1:] == [None] * (ENTER_WINDOWS - 1)  # stays, silently


def test_hopeless_but_not_evidently_it_takes_windows_in_a_row_for_three_seconds() -> None:
    feed = _Feed()
    said = _behind(feed)
    assert ENTER_WINDOWS * WINDOW_S == 3.0
    assert said[:-1] == [None] * (ENTER_WINDOWS - 1)
    assert said[-1] == ("overloaded: 80% of the calls dropped at full effort (300,000/s arriving); working 20% "
                        "of the time until arrivals halve (full effort tried again every 60 s)")
    assert feed.backoff.state == BACKED_OFF


@pytest.mark.parametrize(
    ("windows", "state"),
    [
        # (read, dropped, full effort) per window
        ([(30_000, 120_000, True)] * (ENTER_WINDOWS - 1), NORMAL),  # 80%: five windows are not six
        ([(30_000, 120_000, True)] * 3 + [(30_000, 120_000, False)] + [(30_000, 120_000, True)] * 3,
         NORMAL),  # starved, not hopeless
        ([(40_000, 100_000, True)] * 10, NORMAL),  # 71%: under three quarters
        ([(30_000, 100_000, True)] * ENTER_WINDOWS, BACKED_OFF),  # 77%
        ([(36_000, 4_000, True)] * 20, NORMAL),  # the 20k level's worst windows: 10% dropped
        ([(30_000, 120_000, True)] * 3 + [(100_000, 0, True)] + [(30_000, 120_000, True)] * 3,
         NORMAL),  # a window that kept up: 71% over the six
        # pgbench at full effort on the bench machine (its windows swing with the drains; 81% together): each
        # window under three quarters used to start the count again (backed off 3.3-7.5 s in, or never)
        ([(2_796, 6_765, True), (2_879, 17_692, True), (2_559, 8_850, True), (2_671, 15_140, True),
          (2_401, 15_109, True), (3_708, 8_156, True)], BACKED_OFF),
        # swinging as much around 70% (80% and 60% in turn): not hopeless
        ([(2_000, 8_000, True), (4_000, 6_000, True)] * 6, NORMAL),
        ([(100_000, 0, True)] + [(30_000, 120_000, True)] * ENTER_WINDOWS, BACKED_OFF),
        ([(0, 0, True)] * 10, NORMAL),  # idle host
        ([(11_000, 89_000, True)], NORMAL),  # 89%: not evident
        ([(10_000, 90_000, True)], BACKED_OFF),  # 90%: evident, one window
        ([(8_000, 142_000, False)] * 10, NORMAL),  # evident, but not at full effort (the floor not raised)
        ([(100_000, 0, True), (8_000, 142_000, True)], BACKED_OFF),  # evident after a calm window
    ],
)
def test_it_backs_off_after_windows_in_a_row_at_full_effort_losing_three_quarters_together_or_one_nine_tenths(
    windows: list[tuple[int, int, bool]], state: str
) -> None:
    feed = _Feed()
    for read, dropped, full in windows:
        feed.window(read, dropped, full)
    assert feed.backoff.state == state


def _turn(feed: _Feed, seconds: float, read: int, dropped: int, full_effort: bool = True) -> str | None:
    """One turn of the loop ``seconds`` after the last, the counters read if due."""
    feed.backoff.note_effort(full_effort)
    feed.now += seconds
    feed.read += read
    feed.dropped += dropped
    if not feed.backoff.due(feed.now):
        return "not due"
    return feed.backoff.observe(feed.now, feed.read, feed.dropped)


def test_an_evident_overload_is_decided_a_quarter_window_in() -> None:
    # nginx at saturation: ~400k calls/s arriving, 94% dropped; a quarter window holds ~47k drops
    feed = _Feed()
    assert _turn(feed, QUICK_S / 2, 1_500, 23_000) == "not due"
    said = _turn(feed, QUICK_S / 2, 1_500, 23_000)
    assert said is not None and said.startswith("overloaded: 94% of the calls dropped at full effort")
    assert feed.backoff.state == BACKED_OFF
    assert _turn(feed, QUICK_S, 300, 47_000) == "not due"  # backed off, windows are whole again


def test_early_only_when_evident_at_full_effort_and_on_enough_drops() -> None:
    feed = _Feed()
    assert _turn(feed, QUICK_S, 30_000, 120_000) is None  # 80%: the whole window decides
    assert _turn(feed, QUICK_S, 100, QUICK_MIN_DROPPED - 1_000) is None  # evident, a trickle of drops
    assert feed.backoff.state == NORMAL
    feed = _Feed()
    assert _turn(feed, QUICK_S, 100, QUICK_MIN_DROPPED - 1_000) is None
    assert _turn(feed, QUICK_S, 100, QUICK_MIN_DROPPED - 1_000) is not None  # the window's sum is enough
    feed = _Feed()
    for _ in range(3):  # the window's first three quarters, 60% dropped
        assert _turn(feed, QUICK_S, 40_000, 60_000) is None
    assert _turn(feed, QUICK_S, 1_000, 99_000) is None  # the whole window: 69%, not evident
    assert feed.backoff.state == NORMAL


def test_a_part_window_below_full_effort_starts_the_next_window_where_it_ends() -> None:
    # the floor raises the agent 0.06-0.09 s after READY: the evident part after it decides alone
    feed = _Feed()
    assert _turn(feed, QUICK_S, 1_000, 40_000, full_effort=False) is None
    assert feed.backoff.state == NORMAL
    said = _turn(feed, QUICK_S, 2_000, 45_000)
    assert said is not None and said.startswith("overloaded: 96% of the calls dropped at full effort (376,000/s")


def test_a_starved_window_is_not_full_effort_even_if_one_turn_in_it_was() -> None:
    feed = _Feed()
    for _ in range(ENTER_WINDOWS):
        feed.backoff.note_effort(False)  # e.g. at SCHED_IDLE before the floor raised it
        feed.window(8_000, 142_000, True)
    assert feed.backoff.state == NORMAL


def test_backed_off_it_drains_in_bursts_and_rests_four_times_each_at_a_duty_of_a_fifth() -> None:
    feed = _Feed(duty=0.2)
    # not backed off: a drain returns to the loop within a quarter window, and rests not at all
    assert feed.backoff.burst_s() == TURN_S == WINDOW_S / 4
    assert feed.backoff.rest_after(TURN_S) == 0.0
    _saturated(feed)
    assert feed.backoff.burst_s() == BURST_S
    assert feed.backoff.rest_after(BURST_S) == pytest.approx(4 * BURST_S)
    assert feed.backoff.rest_after(0.05) == pytest.approx(0.2)
    assert feed.backoff.rest_after(0.0) == 0.0
    assert feed.backoff.rest_after(5.0) == MAX_REST_S  # the loop must beat (watchdog, stop)
    half = _Feed(duty=0.5)
    _saturated(half)
    assert half.backoff.rest_after(0.05) == pytest.approx(0.05)


def test_when_arrivals_stay_under_half_for_two_windows_it_returns_to_full_effort() -> None:
    feed = _Feed()
    _saturated(feed)
    # backed off: it reads less, the kernel drops more, arrivals (read + dropped) stay what they were
    assert feed.window(2_000, 148_000) is None
    assert feed.window(1_000, 80_000) is None  # 162,000/s: not under half of 300,000
    assert feed.window(1_000, 70_000) is None  # 142,000/s: under half, once
    assert feed.backoff.state == BACKED_OFF
    assert feed.window(1_000, 60_000) == ("back to full effort: arrivals fell to 122,000/s "
                                          "(from 300,000/s when it backed off)")
    assert feed.backoff.state == NORMAL and feed.backoff.rest_after(0.1) == 0.0


def test_a_pause_of_the_load_shorter_than_two_windows_does_not_end_the_backoff() -> None:
    """The load stopped for a few hundred milliseconds (the VM, a stopped load generator) and
    resumed: with one window enough, the agent went back to full effort, attached what it had
    detached and backed off again a window later (bench/README, twenty-ninth round)."""
    feed = _Feed()
    _saturated(feed)
    for _ in range(3):
        assert feed.window(1_000, 30_000) is None  # the pause: 62,000/s, a fifth of 300,000
        assert feed.window(2_000, 148_000) is None  # the load back
    assert feed.backoff.state == BACKED_OFF and feed.backoff.times_backed_off == 1


def test_every_minute_it_tries_full_effort_again_and_stays_backed_off_while_still_hopeless() -> None:
    feed = _Feed()
    _saturated(feed)
    for _ in range(int(PROBE_EVERY_S / WINDOW_S) - 1):
        assert feed.window(2_000, 148_000) is None
    assert feed.backoff.state == BACKED_OFF
    feed.window(2_000, 148_000)
    assert feed.backoff.state == PROBING and feed.backoff.rest_after(0.1) == 0.0  # full effort
    assert _saturated(feed) == [None]  # still hopeless: back off without a new log line
    assert feed.backoff.state == BACKED_OFF and feed.backoff.times_backed_off == 1
    assert feed.backoff.backed_off_s == pytest.approx(PROBE_EVERY_S)


def test_a_probe_that_keeps_up_returns_to_full_effort() -> None:
    feed = _Feed()
    _saturated(feed)
    for _ in range(int(PROBE_EVERY_S / WINDOW_S)):
        feed.window(2_000, 148_000)
    assert feed.backoff.state == PROBING
    # the host has room again (the same arrivals, but the agent now takes most of them)
    assert feed.window(120_000, 30_000) == "back to full effort: it keeps up again (20% of the calls dropped)"
    assert feed.backoff.state == NORMAL


def test_a_probe_waits_for_full_effort_windows() -> None:
    feed = _Feed()
    _saturated(feed)
    for _ in range(int(PROBE_EVERY_S / WINDOW_S)):
        feed.window(2_000, 148_000)
    assert feed.window(8_000, 142_000, full_effort=False) is None  # the floor not raised yet
    assert feed.backoff.state == PROBING
    _saturated(feed)
    assert feed.backoff.state == BACKED_OFF


def test_a_duty_of_one_never_backs_off_and_reads_no_counters() -> None:
    feed = _Feed.__new__(_Feed)
    feed.now, feed.read, feed.dropped = 0.0, 0, 0
    feed.backoff = OverloadBackoff(1.0, 0.0)
    assert not feed.backoff.due(5.0)
    assert feed.backoff.observe(5.0, 0, 0) is None
    assert feed.backoff.observe(6.0, 8_000, 142_000) is None
    assert feed.backoff.observe(7.0, 16_000, 284_000) is None
    assert feed.backoff.state == NORMAL


@pytest.mark.parametrize("duty", [0.0, -0.1, 1.5])
def test_a_duty_outside_0_to_1_is_refused(duty: float) -> None:
    with pytest.raises(ValueError, match="duty must be in"):
        OverloadBackoff(duty, 0.0)


def test_counters_read_before_a_quarter_window_has_passed_change_nothing() -> None:
    feed = _Feed()
    assert not feed.backoff.due(feed.now + QUICK_S / 2)
    assert feed.backoff.observe(feed.now + QUICK_S / 2, 8_000, 142_000) is None
    assert feed.backoff.state == NORMAL


def test_a_probe_still_slowly_hopeless_backs_off_after_its_windows_and_one_back_in_room_returns() -> None:
    feed = _Feed()
    _behind(feed)
    for _ in range(int(PROBE_EVERY_S / WINDOW_S)):
        feed.window(2_000, 148_000)
    assert feed.backoff.state == PROBING
    assert _behind(feed) == [None] * ENTER_WINDOWS  # no new log line
    assert feed.backoff.state == BACKED_OFF and feed.backoff.times_backed_off == 1


def test_a_burst_taken_for_overload_costs_two_windows_at_the_duty() -> None:
    feed = _Feed()
    assert feed.window(10_000, 190_000) is not None  # 95% of a one-window burst: evident
    assert feed.backoff.resting
    # the burst is over: the next windows' arrivals are a tenth of it, back to full effort after two
    assert feed.window(20_000, 0) is None
    assert feed.window(20_000, 0) == ("back to full effort: arrivals fell to 40,000/s "
                                      "(from 400,000/s when it backed off)")
    assert feed.backoff.state == NORMAL and not feed.backoff.resting


def test_the_thresholds_order() -> None:
    assert 0 < ENTER_LOSS < EVIDENT_LOSS < 1
