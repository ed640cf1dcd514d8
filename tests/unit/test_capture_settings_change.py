"""A settings change reaches the tracker before it is acknowledged: a connection opened after a
reload's READY (or the admin API's answer) is parsed under the new settings, however little event
time went by since the tracker last read them."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from hostagent.assembly import connection_tracker
from hostagent.capture.tracker import SPECS_REFRESH_NS
from hostagent.model import Call, CaptureEvent, Direction, EventKind
from hostagent.settings import CaptureSettings, RuntimeSettings, SettingsHolder
from tests.support.db_fixtures import chunks

MS = 1_000_000
PID = 5151
# psql's INSERT INTO users VALUES (1, 'alice'), (2, 'bob'), recorded from PostgreSQL 15
PSQL = chunks("pg_psql_simple")
RAW = "INSERT INTO users VALUES (1, 'alice'), (2, 'bob')"
SANITISED = "INSERT INTO users VALUES (?, ?), (?, ?)"


def postgres_session(fd: int, t0: int) -> list[CaptureEvent]:
    """The recorded session as psql's side sees it, one event per read/write, 10 us apart."""
    return [
        CaptureEvent(
            kind=EventKind.DATA, ts_ns=t0 + i * 10_000, pid=PID, tid=PID, fd=fd, cgroup_id=1,
            direction=Direction.EGRESS if side == "c" else Direction.INGRESS, data=payload,
            size=len(payload), sock_type=socket.SOCK_STREAM, family=socket.AF_INET,
        )
        for i, (side, payload) in enumerate(PSQL)
    ]


def texts(tracker_calls: list[Call]) -> list[str]:
    return [str(c.attributes["db.query.text"]) for c in tracker_calls if "db.query.text" in c.attributes]


def nothing(pid: int, fd: int) -> None:
    pass


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (False, True, RAW),  # [capture] raw_sql = true by SIGHUP: the next psql keeps its literals
        (True, False, SANITISED),  # and turned off again: the next one has none
    ],
)
def test_a_connection_after_the_change_uses_it(before: bool, after: bool, expected: str) -> None:
    holder = SettingsHolder(RuntimeSettings(probes=frozenset({"postgres"}), capture=CaptureSettings(raw_sql=before)))
    tracker = connection_tracker(holder, nothing, nothing)
    t0 = 5 * SPECS_REFRESH_NS
    first = [c for e in postgres_session(10, t0) for c in tracker.handle(e)]
    assert texts(first)[:1] == [RAW if before else SANITISED]
    holder.update(lambda s: replace(s, capture=replace(s.capture, raw_sql=after)))
    # 1 ms of event time later: well inside the period in which the tracker would not re-read
    second = [c for e in postgres_session(11, t0 + MS) for c in tracker.handle(e)]
    assert texts(second)[:1] == [expected]
