"""MySQL/MariaDB parser over bytes recorded from a real MariaDB 10.11 with the mariadb client,
PyMySQL and mysql-connector-python (server-side prepared statements).

Recordings: tests/fixtures/db/my_*.json (tests/support/record_db_fixtures.py).
"""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.model import Direction, Role, Segment
from hostagent.protocols import mysql
from hostagent.protocols.mysql import MysqlParser, looks_like
from tests.support.db_fixtures import chunks, cut_at, run, segments, summary


def packet(seq: int, payload: bytes) -> bytes:
    """3-byte little-endian payload length, sequence id, payload."""
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


Row = tuple[str, Optional[str], Optional[str], Optional[int]]  # name, query text, error code, rows

CASES: dict[str, list[Row]] = {
    # mariadb -e: the client splits on ';' and sends three COM_QUERY
    "my_cli_queries": [
        ("SELECT people", "SELECT id, name FROM people WHERE id = ?", None, 1),
        ("SELECT people", "SELECT count(*) FROM people", None, 1),
        ("UPDATE people", "UPDATE people SET name = ? WHERE id = ?", None, None),
    ],
    "my_cli_error": [
        ("SELECT missing_table", "SELECT * FROM missing_table", "1146", None),
    ],
    # PyMySQL: its own SET NAMES / SET AUTOCOMMIT, then ours; 'SELECT 1; SELECT 2' is one
    # COM_QUERY with two results (MULTI_STATEMENTS) -> two Calls
    "my_pymysql": [
        ("SET", "SET NAMES utf8mb4", None, None),
        ("SET", "SET AUTOCOMMIT = ?", None, None),
        ("SELECT people", "SELECT id, name FROM people WHERE id = ?", None, 1),
        ("INSERT people", "INSERT INTO people (id, name) VALUES (?, ?)", None, None),
        ("SELECT missing_table", "SELECT * FROM missing_table", "1146", None),
        ("SELECT", "SELECT ?", None, 1),
        ("SELECT", "SELECT ?", None, 1),
        ("COMMIT", "COMMIT", None, None),
    ],
    # mysql-connector prepared=True: COM_STMT_PREPARE (no Call) + COM_STMT_RESET (no Call) +
    # COM_STMT_EXECUTE (a Call with the prepared SQL); the failing PREPARE is a Call
    "my_connector_prepared": [
        ("SET", "SET NAMES ? COLLATE ?", None, None),
        ("SET", "SET @@session.autocommit = OFF", None, None),
        ("SELECT people", "SELECT id, name FROM people WHERE id = ?", None, 1),
        ("SELECT people", "SELECT id, name FROM people WHERE id = ?", None, 1),
        ("UPDATE people", "UPDATE people SET name = ? WHERE id = ?", None, None),
        ("SELECT missing_table", "SELECT * FROM missing_table WHERE id = ?", "1146", None),
    ],
    # lower-case statements: the operation is the keyword as the server knows it, the text as sent
    "my_cli_lowercase": [
        ("SELECT people", "select id, name from people where id = ?", None, 1),
        ("DELETE people", "delete from people where id = ?", None, None),
    ],
    # a result set without rows returned 0 rows (text protocol); an UPDATE's OK returned none
    "my_pymysql_zero_rows": [
        ("SET", "SET NAMES utf8mb4", None, None),
        ("SELECT people", "SELECT id, name FROM people WHERE id < ?", None, 0),
        ("UPDATE people", "UPDATE people SET name = ? WHERE id < ?", None, None),
        ("SELECT people", "SELECT id FROM people WHERE id = ?", None, 1),
    ],
    # the same in the binary protocol (COM_STMT_EXECUTE)
    "my_connector_zero_rows": [
        ("SET", "SET NAMES ? COLLATE ?", None, None),
        ("SET", "SET @@session.autocommit = ON", None, None),
        ("SELECT people", "SELECT id, name FROM people WHERE id < ?", None, 0),
        ("SELECT people", "SELECT id, name FROM people WHERE id = ?", None, 1),
    ],
    # CALL: the procedure's result sets and its own OK end one Call (rows of every result); PyMySQL's
    # callproc sets a user variable and CALLs the procedure by its quoted name
    "my_pymysql_call": [
        ("SET", "SET NAMES utf8mb4", None, None),
        ("CALL get_people", "CALL get_people(?)", None, 3),
        ("SET", "SET @`_get_people_0`=?", None, None),
        ("CALL `get_people`", "CALL `get_people`(@`_get_people_0`)", None, 2),
    ],
    # a prepared CALL: COM_STMT_EXECUTE names the procedure from the COM_STMT_PREPARE text
    "my_connector_call": [
        ("SET", "SET NAMES ? COLLATE ?", None, None),
        ("SET", "SET @@session.autocommit = ON", None, None),
        ("CALL get_people", "CALL get_people(?)", None, 3),
    ],
}


def _rows(calls: list) -> list[Row]:
    return [
        (c.name, c.attributes.get("db.query.text"), c.attributes.get("db.response.status_code"),
         c.attributes.get("db.response.returned_rows"))
        for c in calls
    ]  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("side", ["client", "server"])
def test_recorded_sessions(name: str, side: str) -> None:
    parser = MysqlParser()
    calls = run(parser, segments(name, side))
    assert _rows(calls) == CASES[name]
    role = Role.CLIENT if side == "client" else Role.SERVER
    for call in calls:
        assert call.role == role
        assert call.protocol == "mysql"
        assert call.attributes["db.system.name"] == "mariadb"  # greeting: 5.5.5-10.11.19-MariaDB...
        assert "hostagent.db.system.inferred" not in call.attributes
        assert call.attributes["db.namespace"] == "test"  # HandshakeResponse41 with CONNECT_WITH_DB
        assert call.error_type == call.attributes.get("db.response.status_code")
        assert call.start_ns <= call.end_ns
        assert call.name.startswith(str(call.attributes["db.operation.name"]))
        assert str(call.attributes["db.operation.name"]).isupper()
    assert parser.stats.resyncs == 0 and parser.stats.unpaired == 0


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["bytes", "joined"])
def test_split_and_joined_reads_give_the_same_calls(name: str, mode: str) -> None:
    want = [summary(c) for c in run(MysqlParser(), segments(name))]
    assert [summary(c) for c in run(MysqlParser(), segments(name, mode=mode))] == want


@pytest.mark.parametrize(
    ("name", "procedures"),
    [("my_pymysql_call", [None, "get_people", None, "`get_people`"]),
     ("my_connector_call", [None, None, "get_people"])],
)  # fmt: skip
def test_call_names_its_stored_procedure(name: str, procedures: list[Optional[str]]) -> None:
    calls = run(MysqlParser(), segments(name))
    assert [c.attributes.get("db.stored_procedure.name") for c in calls] == procedures
    assert [c.attributes["db.operation.name"] for c in calls if c.name.startswith("CALL")] == ["CALL"] * (
        len(procedures) // 2
    )


def test_error_message_and_sqlstate() -> None:
    (call,) = run(MysqlParser(), segments("my_cli_error"))
    # ERR packet: 0xFF, code 1146 (0x047A little-endian), '#', SQLSTATE 42S02, message
    # MySQL quotes names and values alike ('PRIMARY', 'alice@x'): without raw_sql both go
    assert call.status_message == "Table '?' doesn't exist"
    (raw,) = run(MysqlParser(raw_sql=True), segments("my_cli_error"))
    assert raw.status_message == "Table 'test.missing_table' doesn't exist"


def test_first_seen_mid_connection_unknown_capabilities() -> None:
    """Skip the handshake: CLIENT_DEPRECATE_EOF is unknown, EOF vs OK is told by length."""
    recorded = chunks("my_cli_queries")[3:]  # from the first COM_QUERY on
    parser = MysqlParser()
    calls = []
    for i, (who, data) in enumerate(recorded):
        direction = Direction.EGRESS if who == "c" else Direction.INGRESS
        calls += parser.feed(Segment(direction, data, len(data), i))
    assert _rows(calls) == CASES["my_cli_queries"]
    # no greeting seen, but the mariadb client's column definitions carry MariaDB's extended metadata
    assert calls[0].attributes["db.system.name"] == "mariadb"
    assert "hostagent.db.system.inferred" not in calls[0].attributes
    assert "db.namespace" not in calls[0].attributes


def test_init_db_changes_namespace_and_makes_no_call() -> None:
    greeting, response, auth_ok = (d for _, d in chunks("my_cli_queries")[:3])
    parser = MysqlParser()
    parser.feed(Segment(Direction.INGRESS, greeting, len(greeting), 1))
    parser.feed(Segment(Direction.EGRESS, response, len(response), 2))
    parser.feed(Segment(Direction.INGRESS, auth_ok, len(auth_ok), 3))
    init_db = packet(0, b"\x02shop")  # COM_INIT_DB "shop"
    ok = packet(1, b"\x00\x00\x00\x02\x00\x00\x00")  # OK: 0 rows, id 0, status AUTOCOMMIT, 0 warnings
    assert parser.feed(Segment(Direction.EGRESS, init_db, len(init_db), 4)) == []
    assert parser.feed(Segment(Direction.INGRESS, ok, len(ok), 5)) == []
    query = packet(0, b"\x03DELETE FROM carts")
    parser.feed(Segment(Direction.EGRESS, query, len(query), 6))
    (call,) = parser.feed(Segment(Direction.INGRESS, ok, len(ok), 7))
    assert call.attributes["db.namespace"] == "shop"
    assert call.name == "DELETE carts"


def test_ssl_request_mutes() -> None:
    greeting = chunks("my_cli_queries")[0][1]
    parser = MysqlParser()
    parser.feed(Segment(Direction.INGRESS, greeting, len(greeting), 1))
    # SSLRequest: 32 bytes = capabilities with CLIENT_SSL (0x800) | PROTOCOL_41, max packet, charset
    caps = (mysql.CLIENT_SSL | mysql.CLIENT_PROTOCOL_41 | mysql.CLIENT_SECURE_CONNECTION).to_bytes(4, "little")
    ssl_request = packet(1, caps + b"\x00\x00\x00\x01" + b"\x21" + b"\x00" * 23)
    parser.feed(Segment(Direction.EGRESS, ssl_request, len(ssl_request), 2))
    assert parser.upgraded is True


def test_mysql_greeting_says_mysql() -> None:
    greeting = chunks("my_cli_queries")[0][1]
    payload = greeting[4:].replace(b"5.5.5-10.11.19-MariaDB-0+deb12u1", b"8.0.36")
    parser = MysqlParser()
    parser.feed(Segment(Direction.INGRESS, packet(0, payload), len(payload) + 4, 1))
    assert parser.system == "mysql"


def test_raw_sql_option() -> None:
    calls = run(MysqlParser(raw_sql=True), segments("my_pymysql"))
    assert calls[3].attributes["db.query.text"] == "INSERT INTO people (id, name) VALUES (20, 'o\\'hara')"
    assert mysql.new_parser(raw_sql=True).raw_sql is True


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (chunks("my_cli_queries")[0][1], True),  # greeting: len, seq 0, 0x0a, "5.5.5-10.11.19-MariaDB..."
        (packet(0, b"\x03SELECT 1"), True),  # COM_QUERY first seen mid-way
        (packet(0, b"\x16SELECT ? FROM t"), True),  # COM_STMT_PREPARE
        (packet(1, b"\x03SELECT 1"), False),  # sequence id 1 is an answer
        (packet(0, b"\x03\x00\x01\x02\xff\xfe"), False),  # binary after COM_QUERY
        (packet(0, b"\x0e"), True),  # COM_PING: a pool checking a connection opened before the agent
        (packet(0, b"\x0e\x00"), False),  # COM_PING has no argument
        (b"Q\x00\x00\x00\x0dSELECT 1\x00", False),  # PostgreSQL Query
        (b"GET / HTTP/1.1\r\n", False),
        (b"", False),
    ],
)  # fmt: skip
def test_looks_like(data: bytes, expected: bool) -> None:
    assert looks_like(data, Direction.INGRESS) is expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200), st.integers(0, 300)), max_size=20))
def test_no_input_raises_and_memory_stays_bounded(chunks_: list[tuple[bool, bytes, int]]) -> None:
    parser = MysqlParser()
    for i, (egress, data, extra) in enumerate(chunks_):
        direction = Direction.EGRESS if egress else Direction.INGRESS
        parser.feed(Segment(direction, data, len(data) + extra, i))
        assert parser._cl.buffered <= mysql.KEEP_CLIENT + 200
        assert parser._sv.buffered <= mysql.KEEP_SERVER + 200
        assert len(parser._pending) <= mysql.MAX_PENDING
    parser.close(10**9)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_real_session_with_random_cuts_gives_the_same_calls(data: st.DataObject) -> None:
    segs = segments("my_connector_prepared", mode="joined")
    want = [summary(c) for c in run(MysqlParser(), segs)]
    cut = cut_at(segs, lambda seg: list(data.draw(st.sets(st.integers(1, max(1, len(seg.data) - 1)), max_size=4))))
    assert [summary(c) for c in run(MysqlParser(), cut)] == want
