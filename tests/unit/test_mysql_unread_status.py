"""A MySQL client that took its results and closed (or exited) without reading the status after
them: PyMySQL's callproc() leaves the CALL's last OK unread until nextset() or the next query,
and a process that exits first never reads it when it comes after its rows (a loaded server
writes it apart). Recordings: tests/fixtures/db/my_pymysql_callproc.json and my_pymysql.json.
"""

from __future__ import annotations

from typing import Optional

import pytest

from hostagent.model import Call
from hostagent.protocols.mysql import MysqlParser
from tests.support.db_fixtures import chunks, segments

OK_PACKET = 11  # the CALL's last OK: 3-byte length 7, sequence, 0x00, rows 0, id 0, status, warnings
Row = tuple[str, Optional[str], object, int]  # name, db.query.text, returned rows, end (ns)


def cut(name: str, keep: int, unread: int = 0) -> list:
    """The client's segments of a recording up to segment ``keep`` (excluded), the last one kept
    without its final ``unread`` bytes."""
    segs = segments(name)[:keep]
    last = segs[-1]
    if unread:
        data = last.data[:-unread]
        segs[-1] = type(last)(last.direction, data, len(data), last.ts_ns)
    return segs


def rows(calls: list[Call]) -> list[Row]:
    return [(c.name, c.attributes.get("db.query.text"), c.attributes.get("db.response.returned_rows"), c.end_ns)  # type: ignore[misc]
            for c in calls]  # fmt: skip


CALL = "CALL `name_of`(@`_name_of_0`)"
SETS: list[Row] = [("SET", "SET NAMES utf8mb4", None, 5000), ("SET", "SET @`_name_of_0`=?", None, 7000)]


@pytest.mark.parametrize(
    ("name", "keep", "unread", "expected", "unpaired"),
    [
        # everything read: the CALL ends with its OK
        ("my_pymysql_callproc", 9, 0, [*SETS, ("CALL `name_of`", CALL, 1, 9000)], 0),
        # the last OK never read: the CALL ended for the client with its rows (their EOF, 9000)
        ("my_pymysql_callproc", 9, OK_PACKET, [*SETS, ("CALL `name_of`", CALL, 1, 9000)], 0),
        # the CALL's rows never came either: nothing to end it
        ("my_pymysql_callproc", 8, 0, SETS, 1),
        # "SELECT 1; SELECT 2" read up to the first result only: the second statement never ran
        # for the client, nothing ends it (it is not a CALL's trailing status)
        ("my_pymysql", 15, 0, [
            ("SET", "SET NAMES utf8mb4", None, 5000), ("SET", "SET AUTOCOMMIT = ?", None, 7000),
            ("SELECT people", "SELECT id, name FROM people WHERE id = ?", 1, 9000),
            ("INSERT people", "INSERT INTO people (id, name) VALUES (?, ?)", None, 11000),
            ("SELECT missing_table", "SELECT * FROM missing_table", None, 13000),
            ("SELECT", "SELECT ?", 1, 15000),
        ], 1),
    ],
)
def test_a_status_left_unread_at_close(name: str, keep: int, unread: int, expected: list[Row], unpaired: int) -> None:
    parser = MysqlParser()
    calls = [c for seg in cut(name, keep, unread) for c in parser.feed(seg)] + parser.close(10**12)
    assert rows(calls) == expected
    assert parser.stats.unpaired == unpaired


def test_lost_calls_still_drop_what_waits() -> None:
    """lost() is not a close: the CALL whose status was not seen is dropped, as before, since the
    bytes after it are unknown."""
    parser = MysqlParser()
    calls = [c for seg in cut("my_pymysql_callproc", 9, OK_PACKET) for c in parser.feed(seg)] + parser.lost()
    assert rows(calls) == SETS
    assert parser.stats.unpaired == 1
    assert len(chunks("my_pymysql_callproc")) == 9
