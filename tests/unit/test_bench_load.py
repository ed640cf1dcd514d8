"""bench/load.py's wrk command line."""

from __future__ import annotations

from bench.load import wrk_duration


def test_wrk_duration_is_whole_seconds_rounded_up() -> None:
    # wrk rejects "-d 1.5s" (it prints its usage): bench-quick's Flask runs are half its 3 s
    assert [wrk_duration(s) for s in (1.5, 5.0, 0.2, 10)] == ["2s", "5s", "1s", "10s"]
