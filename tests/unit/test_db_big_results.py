"""A result bigger than what the kernel copies per call (PostgreSQL, MySQL), read and written in
pieces the way psql/libpq (16 KiB reads), the mysql client, and the servers (8 KiB writes) do:
each piece's first 4096 bytes are captured, the rest is a hole whose length only is known.

The reader's pieces do not start on message boundaries, so once a hole hides a boundary, the
next piece's first byte is anywhere inside a row. Before the fix, the parsers took it for a
message start anyway: row bytes became messages ('E' ErrorResponse, 'K', ...), psql's big query
came out as an error with 121 rows followed by ~40 "postgresql" error spans, the server's span was
lost, and a MySQL connection lost every later command (measured with psql and the mysql client
against real servers). Now the answer is followed only by its size until the client speaks again;
the big statement's span ends with the last bytes of its answer and says neither rows nor outcome
(they were not captured), and the next statement is framed from its own first byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.mysql import MysqlParser
from hostagent.protocols.postgres import PostgresParser

CAPTURED = 4096  # [probes] payload_bytes
ROWS = 20_000


def pieces(stream: bytes, size: int, direction: Direction, ts: int) -> list[Segment]:
    """``stream`` as calls of ``size`` bytes, each with its first CAPTURED bytes copied."""
    out = []
    for i, at in enumerate(range(0, len(stream), size)):
        piece = stream[at : at + size]
        out.append(Segment(direction, piece[:CAPTURED], len(piece), ts + i))
    return out


def pg_msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", 4 + len(body)) + body


def pg_query(sql: str) -> bytes:
    return pg_msg(b"Q", sql.encode() + b"\x00")


def pg_result(rows: list[tuple[bytes, ...]], tag: str) -> bytes:
    cols = len(rows[0]) if rows else 1
    desc = struct.pack("!h", cols) + b"".join(
        f"c{i}".encode() + b"\x00" + struct.pack("!ihihih", 0, 0, 25, -1, -1, 0) for i in range(cols))
    out = [pg_msg(b"T", desc)]
    for row in rows:
        out.append(pg_msg(b"D", struct.pack("!h", len(row)) + b"".join(struct.pack("!i", len(v)) + v for v in row)))
    out.append(pg_msg(b"C", tag.encode() + b"\x00"))
    out.append(pg_msg(b"Z", b"I"))
    return b"".join(out)


def my_packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload


def lenenc_str(v: bytes) -> bytes:
    assert len(v) < 251
    return bytes([len(v)]) + v


def my_query(sql: str) -> bytes:
    return my_packet(0, b"\x03" + sql.encode())


def my_result(rows: list[tuple[bytes, ...]]) -> bytes:
    cols = len(rows[0])
    out = [my_packet(1, bytes([cols]))]
    seq = 2
    for i in range(cols):
        out.append(my_packet(seq, lenenc_str(b"def") + lenenc_str(b"") + lenenc_str(b"t") + lenenc_str(b"t")
                             + lenenc_str(f"c{i}".encode()) + lenenc_str(f"c{i}".encode()) + b"\x0c" + b"\x00" * 12))
        seq += 1
    out.append(my_packet(seq, b"\xfe\x00\x00\x02\x00"))  # EOF after the column definitions
    seq += 1
    for row in rows:
        out.append(my_packet(seq, b"".join(lenenc_str(v) for v in row)))
        seq += 1
    out.append(my_packet(seq, b"\xfe\x00\x00\x02\x00"))  # EOF: the result is over
    return b"".join(out)


# Rows whose own bytes look like message starts wherever a piece begins: lengths of 75 and 76
# ('K', 'L'), digits, "E"s in the text.
BIG_ROWS = [(str(n).encode(), b"xEx" * 16 + b"x" * (n % 3)) for n in range(ROWS)]
SMALL_ROWS = [(b"7",)]


def session(query: Callable[[str], bytes], result: Callable[[list[tuple[bytes, ...]]], bytes],
            client: bool) -> list[Segment]:
    """Two statements on one connection, seen from the client (reads of 16 KiB) or the server
    (writes of 8 KiB): the big one, then a small one."""
    to_server, to_client = ((Direction.EGRESS, Direction.INGRESS) if client
                            else (Direction.INGRESS, Direction.EGRESS))
    big = result(BIG_ROWS)
    segs = [Segment(to_server, query("select n, pad from big")[:CAPTURED], len(query("select n, pad from big")), 1)]
    segs += pieces(big, 16384 if client else 8192, to_client, 10)
    small_q = query("select 7")
    segs.append(Segment(to_server, small_q, len(small_q), 10_000))
    small = result(SMALL_ROWS)
    segs.append(Segment(to_client, small, len(small), 10_001))
    return segs


def pg_session(client: bool) -> list[Segment]:
    return session(pg_query, lambda rows: pg_result(rows, f"SELECT {len(rows)}"), client)


def my_session(client: bool) -> list[Segment]:
    return session(my_query, my_result, client)


def run(parser: Any, segs: list[Segment]) -> list[Call]:
    calls = [c for s in segs for c in parser.feed(s)]
    return calls + parser.close(20_000)


def shape(call: Call) -> tuple[object, ...]:
    a = call.attributes
    return (call.name, a.get("db.query.text"), a.get("db.response.returned_rows"), call.error_type,
            call.start_ns, call.end_ns)


@pytest.mark.parametrize(("new_parser", "make", "system"), [
    (PostgresParser, pg_session, "postgresql"),
    (MysqlParser, my_session, "mysql"),
])
@pytest.mark.parametrize("client", [True, False], ids=["client", "server"])
def test_a_result_bigger_than_the_capture(new_parser: Callable[[], Any], make: Callable[[bool], list[Segment]],
                                          system: str, client: bool) -> None:
    segs = make(client)
    last_piece = segs[-3].ts_ns  # the big answer's last piece
    calls = run(new_parser(), segs)
    assert [shape(c) for c in calls] == [
        # rows and outcome were in bytes not captured: neither is said; it ends with its answer
        ("SELECT big", "select n, pad from big", None, None, 1, last_piece),
        ("SELECT", "select ?", 1, None, 10_000, 10_001),
    ]


@pytest.mark.parametrize(("new_parser", "make"), [(PostgresParser, pg_session), (MysqlParser, my_session)])
def test_the_big_result_whole_is_parsed_as_before(new_parser: Callable[[], Any],
                                                 make: Callable[[bool], list[Segment]]) -> None:
    """The same session with every byte captured: rows counted, nothing adrift."""
    segs = make(True)
    big = (pg_result(BIG_ROWS, f"SELECT {ROWS}") if new_parser is PostgresParser else my_result(BIG_ROWS))
    whole = [segs[0], Segment(segs[1].direction, big, len(big), 10), segs[-2], segs[-1]]
    calls = run(new_parser(), whole)
    assert [(c.name, c.attributes.get("db.response.returned_rows"), c.error_type) for c in calls] == [
        ("SELECT big", ROWS, None), ("SELECT", 1, None)]
