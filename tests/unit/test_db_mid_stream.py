"""Database connections first seen mid-way: opened, and their statements prepared, before the agent
started (or across its restart). A pool with cached prepared statements never sends Parse or
COM_STMT_PREPARE again, only Bind/Execute/Sync or COM_STMT_RESET/EXECUTE: detection must take those
(strictly: other protocols' bytes must not pass), and the spans say what can be known and no more.

Bytes: the recordings of tests/fixtures (real servers and clients), cut where the agent would have
started; the other protocols' recordings are the negatives.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols import mysql, postgres
from tests.fixtures.http1.load import chunks as http1_chunks
from tests.support.db_fixtures import chunks, tracked

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


def packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def _other_protocols() -> list[tuple[str, bytes]]:
    """Every chunk of every non-SQL recording (HTTP/1, HTTP/2 and gRPC, DNS over TCP, Redis)."""
    out: list[tuple[str, bytes]] = []
    for path in sorted((FIXTURES / "http1").glob("*.json")):
        out += [(f"{path.stem}[{i}]", data) for i, (_, data) in enumerate(http1_chunks(path.stem))]
    for path in sorted((FIXTURES / "http2").glob("*.json")):
        doc = json.loads(path.read_text())
        out += [(f"{path.stem}[{i}]", bytes.fromhex(c["hex"])) for i, c in enumerate(doc["chunks"])]
    doc = json.loads((FIXTURES / "dns" / "tcp.json").read_text())
    out += [(f"dns_tcp[{i}]", bytes.fromhex(s["hex"])) for i, s in enumerate(doc["segments"])]
    for path in sorted((FIXTURES / "db").glob("redis_*.json")):
        out += [(f"{path.stem}[{i}]", data) for i, (_, data) in enumerate(chunks(path.stem))]
    return out


def _server_chunks(prefix: str) -> list[tuple[str, bytes]]:
    return [
        (f"{path.stem}[{i}]", data)
        for path in sorted((FIXTURES / "db").glob(f"{prefix}_*.json"))
        for i, (who, data) in enumerate(chunks(path.stem))
        if who == "s"
    ]


OTHERS = _other_protocols()
PSYCOPG_EXECUTE = chunks("pg_psycopg_prepared")[4][1]  # Bind _pg3_0, Describe portal, Execute, Sync
BIND = PSYCOPG_EXECUTE[: 1 + 0x1C]  # 'B', length 28, portal "", "_pg3_0", formats, 1 value, formats


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PSYCOPG_EXECUTE, True),  # psycopg 3, prepare=True, statement prepared before
        (PSYCOPG_EXECUTE[:20], True),  # the same, only 20 bytes captured (a Bind cut in its names)
        (chunks("pg_psycopg_pipeline")[5][1], True),  # psycopg pipeline end: Sync, Flush
        (chunks("pg_psycopg_pipeline")[7][1], True),  # Parse Bind Describe Execute (pipeline)
        (BIND + msg(b"E", b"\x00\x00\x00\x00\x00") + msg(b"S", b""), True),  # pgx/JDBC: B E S
        (msg(b"E", b"\x00\x00\x00\x00\x00") + msg(b"S", b""), True),  # Execute of a bound portal
        (msg(b"C", b"Sstmt_1\x00") + msg(b"S", b""), True),  # Close a statement, Sync
        (b"Q\x00\x00\x00\x0dSELECT 1\x00" + msg(b"X", b""), True),  # a Query, then Terminate
        (msg(b"X", b"") + b"Q\x00\x00\x00\x0dSELECT 1\x00", False),  # Terminate cannot start a write
        (msg(b"S", b""), False),  # a lone Sync: 5 bytes prove little
        (msg(b"D", b"Sstmt_1\x00"), False),  # a lone Describe, likewise
        (msg(b"S", b"x"), False),  # Sync has no body
        (msg(b"E", b"\x00\x00\x00\x00\x00\x00"), False),  # Execute: one byte too many after the name
        (BIND[:-2] + b"\x00\x02" + msg(b"S", b""), False),  # result format code 2 does not exist
        (BIND[:1] + struct.pack("!i", 0x1D) + BIND[5:] + b"\x00" + msg(b"S", b""), False),  # length + 1
        (PSYCOPG_EXECUTE + b"Z\x00\x00\x00\x05I", False),  # a backend message after the client's
        (msg(b"C", b"SELECT 1\x00") + msg(b"Z", b"I"), False),  # CommandComplete, ReadyForQuery
        (msg(b"E", b"SERROR\x00VERROR\x00C42P01\x00Mrelation\x00\x00"), False),  # ErrorResponse
    ],
)  # fmt: skip
def test_postgres_extended_protocol_first_seen_mid_way(data: bytes, expected: bool) -> None:
    assert postgres.looks_like(data, Direction.EGRESS) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (chunks("my_connector_prepared")[11][1], True),  # COM_STMT_RESET 1 (mysql-connector, prepared)
        (chunks("my_connector_prepared")[13][1], True),  # COM_STMT_EXECUTE 1, flags 0, 1 iteration, 1 param
        (chunks("my_connector_prepared")[24][1], True),  # COM_STMT_EXECUTE 2, two params
        (chunks("my_connector_prepared")[19][1], True),  # COM_STMT_CLOSE 1
        (chunks("my_connector_prepared")[7][1], True),  # COM_PING
        (chunks("my_connector_prepared")[19][1] + chunks("my_connector_prepared")[13][1], True),  # CLOSE, EXECUTE
        (packet(0, b"\x02shop"), True),  # COM_INIT_DB
        (packet(0, b"\x1b\x01\x00"), True),  # COM_SET_OPTION MULTI_STATEMENTS_OFF
        (packet(0, b"\x1c\x01\x00\x00\x00\x0a\x00\x00\x00"), True),  # COM_STMT_FETCH 1, 10 rows
        (packet(0, b"\x17\x01\x00\x00\x00\x00\x02\x00\x00\x00"), False),  # EXECUTE: iteration count 2
        (packet(0, b"\x17\x00\x00\x00\x00\x00\x01\x00\x00\x00"), False),  # EXECUTE: statement id 0
        (packet(0, b"\x17\x01\x00\x00\x00\x40\x01\x00\x00\x00"), False),  # EXECUTE: unknown flags
        (packet(0, b"\x19\x01\x00\x00\x00\x00"), False),  # CLOSE: one byte too many
        (packet(0, b"\x1a\x01\x00\x00\x00") + packet(0, b"\x0e"), False),  # RESET has an answer to wait for
        (packet(0, b"\x1b\x05\x00"), False),  # SET_OPTION: no option 5
        (packet(0, b"\x02sh\x00p"), False),  # INIT_DB: a NUL in a name
        (packet(0, b"\x01"), False),  # COM_QUIT: nothing to trace after it
        (packet(1, b"\x00\x00\x00\x02\x00\x00\x00"), False),  # an OK (sequence id 1)
    ],
)  # fmt: skip
def test_mysql_prepared_statement_commands_first_seen_mid_way(data: bytes, expected: bool) -> None:
    assert mysql.looks_like(data, Direction.EGRESS) is expected


ANSWERS = _server_chunks("pg") + [(n, d) for n, d in _server_chunks("my") if d[4:5] != b"\x0a"]  # but greetings


@pytest.mark.parametrize(("name", "data"), OTHERS + ANSWERS)
def test_other_protocols_and_server_answers_are_not_taken_for_sql(name: str, data: bytes) -> None:
    """Each chunk of the other recordings, and each PostgreSQL/MySQL answer."""
    assert postgres.looks_like(data, Direction.EGRESS) is False
    assert postgres.looks_like(data[:64], Direction.EGRESS) is False
    assert mysql.looks_like(data, Direction.EGRESS) is False


Row = tuple[str, Optional[str], Optional[str], Optional[int], object]  # + statement name / id

PG_AFTER_PREPARE: list[Row] = [
    # _pg3_0 was prepared before: the tag names the operation, the statement is named, no text
    ("SELECT", None, None, 1, "_pg3_0"),
    ("SELECT", None, None, 1, "_pg3_0"),
    ("INSERT users", "INSERT INTO users (id, name) VALUES ($1, $2)", None, None, None),  # its Parse was seen
    ("SELECT nope", "SELECT * FROM nope WHERE id = $1", "42P01", None, None),
]
MY_AFTER_PREPARE: list[Row] = [
    # statement 1 was prepared before: nothing says what it does but its id
    ("mysql", None, None, 1, 1),
    ("mysql", None, None, 1, 1),
    ("UPDATE people", "UPDATE people SET name = ? WHERE id = ?", None, None, None),
    ("SELECT missing_table", "SELECT * FROM missing_table WHERE id = ?", "1146", None, None),
]


def _rows(calls: list[Call], key: str) -> list[Row]:
    return [
        (c.name, c.attributes.get("db.query.text"), c.attributes.get("db.response.status_code"),
         c.attributes.get("db.response.returned_rows"), c.attributes.get(key))
        for c in calls
    ]  # fmt: skip


@pytest.mark.parametrize("side", ["client", "server"])
def test_postgres_pool_prepared_before_the_agent(side: str) -> None:
    calls = tracked("pg_psycopg_prepared", 4, side)  # from the first Bind/Describe/Execute/Sync on
    assert _rows(calls, "hostagent.db.statement.name") == PG_AFTER_PREPARE
    assert {c.role for c in calls} == {Role.CLIENT if side == "client" else Role.SERVER}
    assert all(c.attributes["db.system.name"] == "postgresql" for c in calls)


@pytest.mark.parametrize("side", ["client", "server"])
def test_mysql_pool_prepared_before_the_agent(side: str) -> None:
    calls = tracked("my_connector_prepared", 11, side)  # from COM_STMT_RESET 1, COM_STMT_EXECUTE 1 on
    assert _rows(calls, "hostagent.db.statement.id") == MY_AFTER_PREPARE
    assert {c.role for c in calls} == {Role.CLIENT if side == "client" else Role.SERVER}
    assert "db.operation.name" not in calls[0].attributes
    # a MariaDB server, but its greeting went by: the protocol's name, and the span says it is inferred
    assert {(c.attributes["db.system.name"], c.attributes.get("hostagent.db.system.inferred")) for c in calls} == {
        ("mysql", True)
    }


@pytest.mark.parametrize(
    ("name", "first", "system"),
    [
        ("my_pymysql", 0, ("mariadb", None)),  # the greeting: 5.5.5-10.11.19-MariaDB-0+deb12u1
        ("my_pymysql", 3, ("mysql", True)),  # from SET NAMES utf8mb4 on: no greeting
        ("my_pymysql", 7, ("mysql", True)),  # from the SELECT on
        ("my_connector_prepared", 11, ("mysql", True)),  # COM_STMT_EXECUTE of statements prepared unseen
        ("my_cli_queries", 0, ("mariadb", None)),
        # the mariadb client (Connector/C 3.3) asks for extended column metadata: its SELECTs' column
        # definitions say MariaDB (an empty type-info string before the fixed fields)
        ("my_cli_queries", 3, ("mariadb", None)),
        ("my_cli_queries", 5, ("mariadb", None)),
    ],
)  # fmt: skip
@pytest.mark.parametrize("side", ["client", "server"])
def test_mysql_or_mariadb_only_from_what_only_mariadb_sends(name: str, first: int, system: tuple, side: str) -> None:
    """The greeting, or a column definition with MariaDB's extended metadata, tells MariaDB; nothing
    else the ordinary clients' traffic carries does: without either every span says "mysql" (the
    protocol) and that this is inferred, never "mariadb" by guess."""
    calls = tracked(name, first, side)
    assert calls
    assert {(c.attributes["db.system.name"], c.attributes.get("hostagent.db.system.inferred")) for c in calls} == {
        system
    }


def test_mariadb_only_from_the_first_column_definition_that_says_so() -> None:
    """mariadb -e 'UPDATE ...; SELECT ...' picked up at the UPDATE: its OK says nothing (mysql,
    inferred); the SELECT's column definitions say MariaDB, for it and what follows."""
    segs = chunks("my_cli_queries")
    update = next(i for i, (who, d) in enumerate(segs) if who == "c" and d[5:11] == b"UPDATE")
    select = next(i for i, (who, d) in enumerate(segs) if who == "c" and d[5:11] == b"SELECT")
    order = segs[update : update + 2] + segs[select : select + 2]  # UPDATE and its OK, then a SELECT
    parser = mysql.MysqlParser()
    calls = [c for i, (who, d) in enumerate(order)
             for c in parser.feed(Segment(Direction.EGRESS if who == "c" else Direction.INGRESS, d, len(d), i))]
    assert [(c.name, c.attributes["db.system.name"], c.attributes.get("hostagent.db.system.inferred"))
            for c in calls] == [("UPDATE people", "mysql", True), ("SELECT people", "mariadb", None)]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "mariadb"),
    [
        # recorded: the mariadb client (Connector/C) asks for extended metadata, PyMySQL does not
        (chunks("my_cli_queries")[4][1][10:10 + 0x2B], True),  # ... 02 'id' 02 'id', 00 (no type info), 0c ...
        (chunks("my_pymysql")[8][1][9:9 + 0x2A], False),  # ... 02 'id' 02 'id', 0c ...: what MySQL sends
        # type info "\x00\x04json" (MariaDB's JSON column): a 6-byte string, then the fixed fields
        (b"\x03def\x04test\x01t\x01t\x01j\x01j\x06\x00\x04json\x0c" + bytes(12), True),
        (b"\x03def\x04test\x01t\x01t\x01j\x01j\x06\x00\x04json\x0c" + bytes(11), False),  # cut short
        (b"\x03def\x04test\x01t\x01t\x01j\x01j\x06\x00\x04json\x0d" + bytes(12), False),  # no 0x0C after it
        (b"\x03abc\x04test\x01t\x01t\x01j\x01j\x00\x0c" + bytes(12), False),  # not a column definition
    ],
)  # fmt: skip
def test_mariadb_column_definition(payload: bytes, mariadb: bool) -> None:
    assert mysql._mariadb_column(payload) is mariadb


def test_postgres_role_from_an_execute_and_sync_alone() -> None:
    """'E' and 'S' are backend types too (ErrorResponse, ParameterStatus): the shape tells."""
    sent = msg(b"E", b"\x00\x00\x00\x00\x00") + msg(b"S", b"")
    answer = msg(b"D", b"\x00\x01\x00\x00\x00\x012") + msg(b"C", b"SELECT 1\x00") + msg(b"Z", b"I")
    parser = postgres.PostgresParser()
    calls = parser.feed(Segment(Direction.INGRESS, sent, len(sent), 1))  # the traced process is the server
    calls += parser.feed(Segment(Direction.EGRESS, answer, len(answer), 2))
    assert [(c.name, c.role, c.attributes.get("db.response.returned_rows")) for c in calls] == [
        ("SELECT", Role.SERVER, 1)
    ]


def _all_chunks(prefix: str) -> list[tuple[str, bytes]]:
    return [(f"{p.stem}[{i}]", data) for p in sorted((FIXTURES / "db").glob(f"{prefix}_*.json"))
            for i, (_, data) in enumerate(chunks(p.stem))]  # fmt: skip


@pytest.mark.parametrize(("name", "data"), _all_chunks("my"))
def test_postgres_takes_no_mysql_bytes(name: str, data: bytes) -> None:
    """PostgreSQL is tried first: a MySQL packet whose length byte is 'B' or 'E' must not pass."""
    assert postgres.looks_like(data, Direction.EGRESS) is False


@pytest.mark.parametrize(("name", "data"), _all_chunks("pg"))
def test_mysql_takes_no_postgres_typed_message(name: str, data: bytes) -> None:
    assert mysql.looks_like(data, Direction.EGRESS) is False


@pytest.mark.parametrize(
    ("data", "mysql_command"),
    [
        # COM_STMT_SEND_LONG_DATA (0x18) of statement 1, parameter 0, 200 bytes declared: whole, or
        # cut by a 64-byte capture prefix
        ((207).to_bytes(3, "little") + b"\x00\x18\x01\x00\x00\x00\x00\x00" + b"x" * 200, True),
        (((207).to_bytes(3, "little") + b"\x00\x18\x01\x00\x00\x00\x00\x00" + b"x" * 200)[:64], True),
        # psycopg's 'CALL public.touch()' Query: 'Q' 0 0 (length 81), sequence 0, 0x18: a 25-byte
        # write cannot be 85 bytes cut by the capture
        (b"Q\x00\x00\x00\x18CALL public.touch()\x00", False),
    ],
)  # fmt: skip
def test_mysql_send_long_data_cut_short_only_by_the_capture(data: bytes, mysql_command: bool) -> None:
    assert mysql.looks_like(data, Direction.EGRESS) is mysql_command


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=20))
def test_mariadb_column_never_raises(head: bytes, tail: bytes) -> None:
    mysql._mariadb_column(b"\x03def" + head + tail)
    mysql._mariadb_column(head)
