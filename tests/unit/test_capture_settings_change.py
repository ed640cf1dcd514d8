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


def set_raw_sql(holder: SettingsHolder, on: bool) -> None:
    holder.update(lambda s: replace(s, capture=replace(s.capture, raw_sql=on)))


def events(fixture: str, fd: int, t0: int, picks: list[int]) -> list[CaptureEvent]:
    """Segments ``picks`` of a recording as one connection's events (the client's side), 10 us apart."""
    recorded = chunks(fixture)
    return [
        CaptureEvent(
            kind=EventKind.DATA, ts_ns=t0 + i * 10_000, pid=PID, tid=PID, fd=fd, cgroup_id=1,
            direction=Direction.EGRESS if recorded[n][0] == "c" else Direction.INGRESS, data=recorded[n][1],
            size=len(recorded[n][1]), sock_type=socket.SOCK_STREAM, family=socket.AF_INET,
        )
        for i, n in enumerate(picks)
    ]


# (recording, its opening up to a first statement, a statement + answer to repeat, what the
# statement's span shows sanitised and raw: db.query.text or, for an error, the status message)
OPEN_CONNECTIONS = [
    ("pg_psql_simple", [0, 1, 2, 3], [4, 5], SANITISED, RAW),
    ("my_pymysql", [0, 1, 2], [9, 10], "INSERT INTO people (id, name) VALUES (?, ?)",
     "INSERT INTO people (id, name) VALUES (20, 'o\\'hara')"),
    ("my_pymysql", [0, 1, 2], [11, 12], "Table '?' doesn't exist", "Table 'test.missing_table' doesn't exist"),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "opening", "statement", "sanitised", "raw"), OPEN_CONNECTIONS)
@pytest.mark.parametrize("first", [False, True])
def test_an_open_connection_follows_each_change(
    fixture: str, opening: list[int], statement: list[int], sanitised: str, raw: str, first: bool
) -> None:
    """A pooled connection opened before the change: its next statement follows it, both ways, the
    same text too (what the parser memoised under the old value is not reused)."""
    holder = SettingsHolder(RuntimeSettings(probes=frozenset({"postgres", "mysql"}),
                                            capture=CaptureSettings(raw_sql=first)))  # fmt: skip
    tracker = connection_tracker(holder, nothing, nothing)
    t0 = 5 * SPECS_REFRESH_NS
    seen = []
    for step, raw_sql in enumerate([first, not first, first]):
        if step:
            set_raw_sql(holder, raw_sql)
        picks = opening + statement if step == 0 else statement
        calls = [c for e in events(fixture, 10, t0 + step * MS, picks) for c in tracker.handle(e)]
        seen.append([c.status_message or c.attributes["db.query.text"] for c in calls])
    want = [raw if on else sanitised for on in (first, not first, first)]
    assert seen == [[w] for w in want]
