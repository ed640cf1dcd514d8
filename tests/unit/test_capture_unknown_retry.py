"""A connection judged unknown on a stream the kernel lost calls of is detected again later.

The case (test_db_mid_stream_daemon under load): a Redis client first seen while it reads a 4 MB
GET reply, the GETs going on. With the ring full the kernel sheds data calls; each small command
write comes right after a burst of the reply's reads and is shed, so detection sees only the
value's middle (16 KB copied of each 64 KB read) and, after DETECT_SEGMENTS_MIDWAY of them, mutes
the connection as unknown. Its later commands were never traced, on either end. Now such a
connection (a loss was reported while it was being detected) is unmuted and detected again
UNKNOWN_RETRY_NS later, a few times at most, each after longer; one that lost nothing stays muted.
Bytes: the client's reads and writes of that test (a GET reply of b"x" * 4_000_000, INCR after)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Optional

from hostagent.capture.state import (
    DETECT_SEGMENTS_MIDWAY,
    UNKNOWN_RETRIES,
    UNKNOWN_RETRY_FACTOR,
    UNKNOWN_RETRY_NS,
)
from hostagent.capture.tracker import ConnectionTracker
from hostagent.config import Config
from hostagent.daemon import Agent
from hostagent.model import Call, CaptureEvent, EventKind
from hostagent.protocols import http1, redis
from tests.unit.test_capture import FD, IN, OUT, PID, Recorder, data, ev

PAYLOAD = 16384  # the kernel copies this much of each call (the test's payload_bytes)
READ = 1 << 16  # the client's recv size
VALUE_PIECE = b"x" * READ  # a read from the middle of the 4 MB value
INCR = b"*2\r\n$4\r\nINCR\r\n$5\r\nafter\r\n"
INCR_REPLY = b":1\r\n"
SEC = 1_000_000_000


def piece(ts: int, lost: int = 0) -> CaptureEvent:
    return data(ts, IN, VALUE_PIECE[:PAYLOAD], size=READ, lost=lost)


def reply_pieces(start: int, count: int, lost_every: int = 0, lost: int = 0) -> list[CaptureEvent]:
    """``count`` reads of the value from ``start`` ns on; with ``lost_every``, the GET written
    before every ``lost_every``-th of them was shed (the kernel's count, carried by the read)."""
    events = []
    for i in range(count):
        if lost_every and i % lost_every == lost_every - 1:
            lost += 1
        events.append(piece(start + i, lost))
    return events


class Side:
    """One tracker fed one socket's events; what it muted, unmuted and called."""

    def __init__(self) -> None:
        self.muted, self.unmuted = Recorder(), Recorder()
        self.tracker = ConnectionTracker(lambda: (http1.SPEC, redis.SPEC), on_mute=self.muted,
                                         on_unmute=self.unmuted)  # fmt: skip
        self.calls: list[Call] = []

    def feed(self, events: list[CaptureEvent]) -> None:
        for e in events:
            self.calls.extend(self.tracker.handle(e))

    def incr(self, ts: int, lost: int = 0) -> None:
        self.feed([data(ts, OUT, INCR, lost=lost), data(ts + 1, IN, INCR_REPLY, lost=lost)])

    def names(self) -> list[str]:
        return [c.attributes["db.operation.name"] for c in self.calls]


def given_up_lossy(side: Side, start: int = 1) -> int:
    """Detection gives up on the connection, calls having been lost meanwhile; its last loss count."""
    events = reply_pieces(start, DETECT_SEGMENTS_MIDWAY, lost_every=61)
    side.feed(events)
    assert len(side.muted.muted) == 1 and side.tracker.stats()["unknown"] == 1
    return events[-1].lost


def test_judged_on_a_lossy_stream_it_is_detected_again_after_a_while() -> None:
    side = Side()
    lost = given_up_lossy(side)
    gave_up = DETECT_SEGMENTS_MIDWAY
    assert side.tracker.retry_unknown(gave_up + UNKNOWN_RETRY_NS - 1) == 0  # not yet: still muted
    assert side.unmuted.muted == []
    assert side.tracker.retry_unknown(gave_up + UNKNOWN_RETRY_NS) == 1
    assert side.unmuted.muted == side.muted.muted == [(PID, FD)]
    side.incr(gave_up + 2 * SEC, lost)
    assert side.names() == ["INCR"]
    stats = side.tracker.stats()
    assert (stats["unknown_retried"], stats["detected_redis"], stats["lost_gaps"]) == (1, 1, 4)
    assert stats["unknown"] == 0  # one connection, detected: never in two buckets


def test_a_stream_seen_whole_stays_muted() -> None:
    """No loss: what detection saw is what went by (a value's middle, TLS records): not retried."""
    side = Side()
    side.feed(reply_pieces(1, DETECT_SEGMENTS_MIDWAY))
    assert len(side.muted.muted) == 1
    assert side.tracker.retry_unknown(1000 * SEC) == 0
    side.incr(1001 * SEC)
    assert side.calls == [] and side.unmuted.muted == [] and side.tracker.stats()["unknown_retried"] == 0


def test_a_loss_before_detection_saw_anything_does_not_count() -> None:
    """Calls shed while the socket was muted show as a loss at its first event after the retry:
    detection saw all it judged on, so it gives up for good this time."""
    side = Side()
    lost = given_up_lossy(side)
    assert side.tracker.retry_unknown(DETECT_SEGMENTS_MIDWAY + UNKNOWN_RETRY_NS) == 1
    side.feed(reply_pieces(2 * SEC, DETECT_SEGMENTS_MIDWAY, lost=lost + 3))
    assert len(side.muted.muted) == 2
    assert side.tracker.retry_unknown(1000 * SEC) == 0
    assert side.tracker.stats()["unknown_retried"] == 1


def test_retries_are_bounded_each_after_longer() -> None:
    side = Side()
    lost = given_up_lossy(side)
    now, delays = DETECT_SEGMENTS_MIDWAY, []
    for retry in range(UNKNOWN_RETRIES + 1):
        delay = UNKNOWN_RETRY_NS * UNKNOWN_RETRY_FACTOR**retry
        if retry == UNKNOWN_RETRIES:
            assert side.tracker.retry_unknown(now + 1000 * delay) == 0  # given up for good
            break
        assert side.tracker.retry_unknown(now + delay - 1) == 0
        assert side.tracker.retry_unknown(now + delay) == 1
        delays.append(delay)
        events = reply_pieces(now + delay + 1, DETECT_SEGMENTS_MIDWAY, lost_every=61, lost=lost)
        side.feed(events)
        now, lost = events[-1].ts_ns, events[-1].lost
    assert delays == [SEC, 4 * SEC, 16 * SEC]
    assert len(side.muted.muted) == UNKNOWN_RETRIES + 1 and len(side.unmuted.muted) == UNKNOWN_RETRIES
    assert side.tracker.stats()["unknown_retried"] == UNKNOWN_RETRIES
    assert side.tracker.stats()["unknown"] == 1  # one connection, judged four times


def test_a_connection_closed_meanwhile_is_not_unmuted() -> None:
    side = Side()
    given_up_lossy(side)
    side.feed([ev(EventKind.CLOSE, DETECT_SEGMENTS_MIDWAY + 1)])
    assert side.tracker.retry_unknown(DETECT_SEGMENTS_MIDWAY + 100 * SEC) == 0
    assert side.unmuted.muted == []


class _OneTurn:
    """Stands in for assembly.Capture: the poll loop turns once (no event: the socket is muted)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def poll(self, timeout_s: float, budget_s: Optional[float] = None) -> int:
        self.agent.stop_requested = True
        return 0


def test_the_daemons_poll_loop_retries_them_with_no_event_coming() -> None:
    side = Side()
    start = time.monotonic_ns() - 2 * UNKNOWN_RETRY_NS  # events' ts_ns: CLOCK_MONOTONIC, as the kernel's
    given_up_lossy(side, start)
    agent = Agent(Config())
    agent.backoff = None
    agent.capture = _OneTurn(agent)  # type: ignore[assignment]
    agent.pipeline = SimpleNamespace(tracker=side.tracker)
    agent.shutdown = lambda: None  # type: ignore[method-assign]
    assert agent.run() == 0
    assert side.unmuted.muted == [(PID, FD)] and side.tracker.stats()["unknown_retried"] == 1
