"""Streams first seen mid-way (open before the agent started, or a probe turned back on): the
first bytes may be the rest of a message in flight, so detection tries each segment on its own
for longer (DETECT_SEGMENTS_MIDWAY) than on a connection whose beginning the kernel saw.
Bytes: redis-cli 7 on loopback (tests/fixtures/db/redis_cli.json): its COMMAND DOCS reply
(172 KB) is read in 16 KB pieces, the agent starting while it is in flight."""

from __future__ import annotations

import socket

from hostagent.capture.state import DETECT_SEGMENTS, DETECT_SEGMENTS_MIDWAY
from hostagent.capture.tracker import ConnectionTracker
from hostagent.model import Call, CaptureEvent, Direction, EventKind
from hostagent.protocols import http1, redis
from tests.support.db_fixtures import chunks
from tests.unit.test_capture import IN, OUT, Recorder, data, opened

PAYLOAD = 4096  # the kernel copies this much of each read (payload_bytes)
READ = 16 * 1024  # redis-cli reads 16 KB at a time

RECORDED = chunks("redis_cli")
REPLY = b"".join(d for who, d in RECORDED[1:4])  # COMMAND DOCS' reply, 3 server writes
AFTER = RECORDED[4:]  # SET, GET, ... and their replies


def reads(blob: bytes) -> list[bytes]:
    return [blob[i : i + READ] for i in range(0, len(blob), READ)]


def event(ts: int, direction: Direction, whole: bytes) -> CaptureEvent:
    return data(ts, direction, whole[:PAYLOAD], size=len(whole))


def client_side(first_read: int) -> list[CaptureEvent]:
    """The client's events from its ``first_read``-th read of the reply on, then the rest."""
    events = [event(i, IN, piece) for i, piece in enumerate(reads(REPLY)[first_read:], 1)]
    for who, d in AFTER:
        events.append(event(len(events) + 1, OUT if who == "c" else IN, d))
    return events


def run(events: list[CaptureEvent]) -> tuple[list[Call], Recorder, ConnectionTracker]:
    rec = Recorder()
    t = ConnectionTracker(lambda: (http1.SPEC, redis.SPEC), on_mute=rec)
    calls = [c for e in events for c in t.handle(e)]
    return calls, rec, t


def test_the_end_of_a_reply_in_flight_does_not_hide_the_connection() -> None:
    events = client_side(first_read=1)
    assert sum(1 for e in events if e.direction == IN) > DETECT_SEGMENTS + 5  # 10 reads of the reply
    calls, rec, t = run(events)
    commands = [c.attributes["db.operation.name"] for c in calls]
    assert commands == [redis_command(d) for who, d in AFTER if who == "c"]
    assert len(commands) == 5 and rec.muted == [] and t.stats()["unknown"] == 0


def redis_command(raw: bytes) -> str:
    return raw.split(b"\r\n")[2].decode().upper()


def test_a_connection_seen_from_its_beginning_still_gives_up_after_three_segments() -> None:
    calls, rec, t = run([opened(0), *client_side(first_read=1)])
    assert calls == [] and len(rec.muted) == 1 and t.stats()["unknown"] == 1


def test_a_stream_seen_mid_way_gives_up_after_its_own_bound() -> None:
    noise = [data(ts, IN, b"\x17\x03\x03\x40\x00" + b"\xa5" * 100) for ts in range(1, DETECT_SEGMENTS_MIDWAY + 1)]
    calls, rec, t = run(noise[:-1])
    assert calls == [] and rec.muted == []
    calls, rec, t = run(noise)
    assert calls == [] and len(rec.muted) == 1 and t.stats()["unknown"] == 1


def test_datagrams_are_not_streams_seen_mid_way() -> None:
    rec = Recorder()
    t = ConnectionTracker(lambda: (http1.SPEC,), on_mute=rec)
    for ts in range(1, 4):
        t.handle(CaptureEvent(EventKind.DATA, ts, 9, 9, 5, direction=IN, size=5, data=b"\x00\x01\x02\x03\x04",
                              family=socket.AF_INET, sock_type=socket.SOCK_DGRAM))  # fmt: skip
    assert len(rec.muted) == 1
