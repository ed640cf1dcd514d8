"""PostgreSQL parser over bytes recorded from a real PostgreSQL 15 with psql and psycopg 3.

Recordings: tests/fixtures/db/pg_*.json (tests/support/record_db_fixtures.py made them through
tests/support/tcp_recorder.py). Every case asserts the exact Calls: one per statement run.
"""

from __future__ import annotations

import struct
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.model import Direction, Role, Segment
from hostagent.protocols import postgres
from hostagent.protocols.postgres import PostgresParser, looks_like
from tests.support.db_fixtures import chunks, cut_at, run, segments, summary


def msg(kind: bytes, body: bytes) -> bytes:
    """A typed message: type byte, int32 length (itself included), body."""
    return kind + struct.pack("!i", 4 + len(body)) + body


Row = tuple[str, Optional[str], Optional[str], Optional[int]]  # name, query text, SQLSTATE, rows

CASES: dict[str, list[Row]] = {
    # psql script: one Query message per statement
    "pg_psql_simple": [
        ("INSERT users", "INSERT INTO users VALUES (?, ?), (?, ?)", None, None),
        ("SELECT users", "SELECT id, name FROM users WHERE id = ?", None, 1),
        ("SELECT users", "SELECT count(*) FROM users", None, 1),
    ],
    # psql -c: ONE Query message with three statements -> three Calls
    "pg_psql_multi": [
        ("SELECT", "SELECT ?", None, 1),
        ("SELECT", "SELECT ?", None, 1),
        ("UPDATE users", "UPDATE users SET name = ? WHERE id = ?", None, None),
    ],
    "pg_psql_error": [
        ("SELECT missing_table", "SELECT * FROM missing_table", "42P01", None),
    ],
    "pg_psql_txn": [
        ("BEGIN", "BEGIN", None, None),
        ("INSERT users", "INSERT INTO users VALUES (?, ?)", None, None),
        ("UPDATE users", "UPDATE users SET name = ? WHERE id = ?", None, None),
        ("COMMIT", "COMMIT", None, None),
    ],
    # COPY ... TO STDOUT: CopyOutResponse, CopyData rows, CopyDone, then CommandComplete "COPY 3"
    "pg_psql_copy": [
        ("COPY", "COPY (SELECT id, name FROM users ORDER BY id) TO STDOUT", None, 3),
    ],
    # psycopg cursor.copy: FROM STDIN (CopyInResponse, the client's CopyData, CopyDone; its tag
    # "COPY 3" counts rows written, not returned), TO STDOUT (tag "COPY 4": returned), and a
    # FROM STDIN that fails at CopyDone with 23505
    "pg_psycopg_copy": [
        ("COPY users", "COPY users (id, name) FROM STDIN", None, None),
        ("COPY users", "COPY users (id, name) TO STDOUT", None, 4),
        ("COPY users", "COPY users (id, name) FROM STDIN", "23505", None),
    ],
    # COPY TO STDOUT failing part-way (CopyOutResponse, 2 CopyData, then ErrorResponse 22012): the
    # rows sent are not counted (CopyData is not one per row in binary), so the span says none
    "pg_psql_copy_error": [
        ("COPY", "COPY (SELECT ? / (? - i) FROM generate_series(?, ?) i) TO STDOUT", "22012", None),
    ],
    # CALL: the span is named after the stored procedure; an INOUT parameter returns one row
    "pg_psycopg_call": [
        ("CALL add_one", "CALL add_one($1)", None, 1),
        ("CALL public.touch", "CALL public.touch()", None, None),
    ],
    # psycopg prepare_threshold=0: named statements _pg3_0.. prepared (Parse+Sync) then
    # Bind/Describe/Execute/Sync; the failing one fails at Parse with 42P01
    "pg_psycopg_prepared": [
        ("SELECT users", "SELECT id, name FROM users WHERE id = $1", None, 1),
        ("SELECT users", "SELECT id, name FROM users WHERE id = $1", None, 1),
        ("INSERT users", "INSERT INTO users (id, name) VALUES ($1, $2)", None, None),
        ("SELECT nope", "SELECT * FROM nope WHERE id = $1", "42P01", None),
    ],
    # psycopg pipeline: 3 x (Parse Bind Describe Execute) + Sync; then SELECT 1, a failing
    # SELECT and SELECT 3 in one pipeline: the server skips SELECT 3 (no Call)
    "pg_psycopg_pipeline": [
        ("SELECT users", "SELECT name FROM users WHERE id = $1", None, 1),
        ("INSERT users", "INSERT INTO users (id, name) VALUES ($1, $2)", None, None),
        ("SELECT users", "SELECT count(*) FROM users", None, 1),
        ("SELECT", "SELECT ?", None, 1),
        ("SELECT nope", "SELECT * FROM nope", "42P01", None),
    ],
    # rows announced by a RowDescription but none came: 0 (SELECT's tag says so too; INSERT
    # ... RETURNING's tag counts inserted rows, "INSERT 0 0"); an UPDATE returns no rows at all
    # psql -c with lower-case statements: the operation is the keyword as the server knows it,
    # the text stays as sent
    "pg_psql_lowercase": [
        ("SELECT users", "select id, name from users where id = ?", None, 1),
        ("UPDATE users", "update users set name = ? where id = ?", None, None),
    ],
    "pg_psycopg_zero_rows": [
        ("SELECT users", "SELECT id, name FROM users WHERE id < $1", None, 0),
        ("INSERT users", "INSERT INTO users SELECT $1, ? WHERE false RETURNING id", None, 0),
        ("UPDATE users", "UPDATE users SET name = $1 WHERE id < ?", None, None),
        ("SELECT", "SELECT ? WHERE false", None, 0),
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
    parser = PostgresParser()
    calls = run(parser, segments(name, side))
    assert _rows(calls) == CASES[name]
    role = Role.CLIENT if side == "client" else Role.SERVER
    for call in calls:
        assert call.role == role
        assert call.protocol == "postgresql"
        assert call.attributes["db.system.name"] == "postgresql"
        assert call.attributes["db.namespace"] == "postgres"  # startup message: database=postgres
        assert call.start_ns <= call.end_ns
        assert call.error_type == call.attributes.get("db.response.status_code")
        assert call.request_body == b""
        assert call.name.startswith(str(call.attributes["db.operation.name"]))
        assert str(call.attributes["db.operation.name"]).isupper()
    assert parser.stats.resyncs == 0 and parser.stats.unpaired == 0 and parser.stats.truncated == 0


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["bytes", "joined"])
def test_split_and_joined_reads_give_the_same_calls(name: str, mode: str) -> None:
    want = [summary(c) for c in run(PostgresParser(), segments(name))]
    assert [summary(c) for c in run(PostgresParser(), segments(name, mode=mode))] == want


def test_call_names_its_stored_procedure() -> None:
    calls = run(PostgresParser(), segments("pg_psycopg_call"))
    assert [(c.attributes["db.operation.name"], c.attributes["db.stored_procedure.name"]) for c in calls] == [
        ("CALL", "add_one"), ("CALL", "public.touch"),
    ]  # fmt: skip
    assert "db.collection.name" not in calls[0].attributes


def test_pipeline_error_skips_until_sync_and_counts() -> None:
    parser = PostgresParser()
    calls = run(parser, segments("pg_psycopg_pipeline"))
    assert len(calls) == 5
    assert parser.stats.extra == {"skipped": 1}  # SELECT 3 was sent but never run
    error = calls[4]
    assert error.error_type == "42P01"
    assert error.status_message == 'relation "nope" does not exist'


def test_timestamps_are_first_request_byte_to_completion() -> None:
    segs = segments("pg_psql_multi")  # chunk ts: 1000 SSLRequest ... 5000 Query, 6000 answers
    calls = run(PostgresParser(), segs)
    assert [(c.start_ns, c.end_ns) for c in calls] == [(5000, 6000), (6000, 6000), (6000, 6000)]


def test_ssl_request_refused_keeps_parsing_accepted_mutes() -> None:
    ssl_request = struct.pack("!ii", 8, 80877103)  # length 8, SSLRequest code 1234/5679
    parser = PostgresParser()
    assert parser.feed(Segment(Direction.EGRESS, ssl_request, 8, 1)) == []
    parser.feed(Segment(Direction.INGRESS, b"S", 1, 2))  # 'S': the server will speak TLS
    assert parser.upgraded is True
    assert parser.feed(Segment(Direction.EGRESS, b"\x16\x03\x01\x02\x00" + b"\x01" * 40, 45, 3)) == []
    # psql recording: SSLRequest answered 'N', then plaintext startup and queries
    assert chunks("pg_psql_multi")[1] == ("s", b"N")
    assert PostgresParser().upgraded is False


def test_startup_without_database_uses_user_name() -> None:
    startup = b"user\x00alice\x00\x00"
    msg = struct.pack("!ii", 8 + len(startup), 196608) + startup  # length, protocol 3.0, params
    query = b"Q" + struct.pack("!i", 4 + 9) + b"SELECT 1\x00"  # 'Q', length, text\0
    parser = PostgresParser()
    parser.feed(Segment(Direction.EGRESS, msg, len(msg), 1))
    parser.feed(Segment(Direction.EGRESS, query, len(query), 2))
    answer = b"C" + struct.pack("!i", 4 + 9) + b"SELECT 1\x00" + b"Z\x00\x00\x00\x05I"
    (call,) = parser.feed(Segment(Direction.INGRESS, answer, len(answer), 3))
    assert call.attributes["db.namespace"] == "alice"


def test_joined_mid_connection_and_unknown_prepared_statement() -> None:
    """First bytes seen: an Execute of a statement prepared before capture started."""
    bind = msg(b"B", b"\x00stmt9\x00" + b"\x00\x00" * 3)  # portal "", statement, no formats/params
    execute = msg(b"E", b"\x00" + b"\x00\x00\x00\x00")  # portal "", no row limit
    sync = msg(b"S", b"")
    parser = PostgresParser()
    sent = bind + execute + sync
    assert parser.feed(Segment(Direction.EGRESS, sent, len(sent), 1)) == []
    answer = msg(b"2", b"") + msg(b"C", b"SELECT 3\x00") + msg(b"Z", b"I")
    (call,) = parser.feed(Segment(Direction.INGRESS, answer, len(answer), 2))
    assert call.name == "SELECT"  # from the CommandComplete tag: the SQL is not known
    assert "db.query.text" not in call.attributes
    assert call.attributes["db.response.returned_rows"] == 3


def test_query_longer_than_the_captured_prefix() -> None:
    sql = b"SELECT * FROM big WHERE v IN (" + b"1, " * 3000 + b"1)"
    query = b"Q" + struct.pack("!i", 4 + len(sql) + 1) + sql + b"\x00"
    parser = PostgresParser()
    parser.feed(Segment(Direction.EGRESS, query[:256], len(query), 1))  # only 256 bytes copied
    answer = b"C\x00\x00\x00\x0dSELECT 0\x00Z\x00\x00\x00\x05I"
    (call,) = parser.feed(Segment(Direction.INGRESS, answer, len(answer), 2))
    assert call.name == "SELECT big"
    assert str(call.attributes["db.query.text"]).startswith("SELECT * FROM big WHERE v IN (?, ?, ?")
    assert call.request_size == len(query)
    assert parser.stats.truncated == 1
    # the next query, after the hole, is framed correctly
    parser.feed(Segment(Direction.EGRESS, b"Q\x00\x00\x00\x0dSELECT 2\x00", 14, 3))
    (call2,) = parser.feed(Segment(Direction.INGRESS, answer, len(answer), 4))
    assert call2.attributes["db.query.text"] == "SELECT ?"


def test_raw_sql_keeps_literals() -> None:
    calls = run(PostgresParser(raw_sql=True), segments("pg_psql_simple"))
    assert calls[0].attributes["db.query.text"] == "INSERT INTO users VALUES (1, 'alice'), (2, 'bob')"
    assert postgres.new_parser(raw_sql=True).raw_sql is True
    assert postgres.SPEC.new_parser().raw_sql is False  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (struct.pack("!ii", 8, 80877103), True),  # SSLRequest
        (struct.pack("!ii", 8, 80877104), True),  # GSSENCRequest
        (chunks("pg_psql_multi")[2][1], True),  # startup: length, 196608, user\0postgres\0...
        (b"Q\x00\x00\x00\x0dSELECT 1\x00", True),  # a Query first seen mid-way
        (b"P\x00\x00\x00\x15s1\x00SELECT 1\x00\x00\x00", True),  # Parse: name, text, 0 params
        (b"Q\x00\x00\x00\x0d\x89\x12\xff\x00\x10\x00\x01\x00\x00", False),  # binary after 'Q'
        (b"Q\xff\xff\xff\xffSELECT", False),  # absurd length
        (b"GET / HTTP/1.1\r\n", False),
        (b"*1\r\n$4\r\nPING\r\n", False),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", False),  # TLS ClientHello
        (b"", False),
    ],
)  # fmt: skip
def test_looks_like(data: bytes, expected: bool) -> None:
    assert looks_like(data, Direction.EGRESS) is expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=200), st.integers(0, 300)), max_size=20))
def test_no_input_raises_and_memory_stays_bounded(chunks_: list[tuple[bool, bytes, int]]) -> None:
    parser = PostgresParser()
    for i, (egress, data, extra) in enumerate(chunks_):
        direction = Direction.EGRESS if egress else Direction.INGRESS
        parser.feed(Segment(direction, data, len(data) + extra, i))
        assert parser._fe.buffered <= postgres.KEEP_FRONTEND + 200
        assert parser._be.buffered <= postgres.KEEP_BACKEND + 200
        assert len(parser._items) <= postgres.MAX_ITEMS
    parser.close(10**9)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_real_session_with_random_cuts_gives_the_same_calls(data: st.DataObject) -> None:
    segs = segments("pg_psycopg_pipeline", mode="joined")
    want = [summary(c) for c in run(PostgresParser(), segs)]
    cut = cut_at(segs, lambda seg: list(data.draw(st.sets(st.integers(1, max(1, len(seg.data) - 1)), max_size=4))))
    assert [summary(c) for c in run(PostgresParser(), cut)] == want
