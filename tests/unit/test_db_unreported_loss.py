"""Database readers that lost part of a big answer without being told resynchronise.

The kernel tells the tracker about the calls it did not capture (``lost()``), but not every loss is
reported (bpf/capture.c says which are not: an inherited or dup()'d entry's, a shed mark that
matched by chance). A reader inside a long message then takes the next bytes for the rest of it and
the following headers from the wrong place: a garbage length of hundreds of megabytes swallowed
every later answer of a pooled connection, or answers were paired with the wrong statements.
Recordings: a big result set, then small statements on the same connection, each answer cut into
the reads a client makes and copied as the kernel copies them (at most ``captured`` bytes of each
read, the size of the read known), some reads left out unannounced.
"""

from __future__ import annotations

from typing import Optional

import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.base import StreamParser
from hostagent.protocols.mysql import MysqlParser
from hostagent.protocols.postgres import PostgresParser
from tests.support.db_fixtures import chunks

Spans = list[tuple[str, Optional[object], Optional[object]]]  # name, returned rows, query text


def reads(name: str, read: int, captured: int, left_out: Optional[int] = None, side: str = "client") -> list[Segment]:
    """The recording as one side's segments: each run of the server's chunks joined and cut into
    ``read``-byte reads, each read's first ``captured`` bytes kept; the big answer's read number
    ``left_out`` (counted over the whole recording's cut answers) never seen, nothing said."""
    joined: list[tuple[str, bytes]] = []
    for who, data in chunks(name):
        if joined and joined[-1][0] == who == "s":
            joined[-1] = (who, joined[-1][1] + data)
        else:
            joined.append((who, data))
    out: list[Segment] = []
    ts = 0
    for who, data in joined:
        pieces = [data[i : i + read] for i in range(0, len(data), read)]
        for n, piece in enumerate(pieces):
            ts += 1000
            if len(pieces) > 1 and n == left_out:
                continue
            mine = (who == "c") == (side == "client")
            out.append(Segment(Direction.EGRESS if mine else Direction.INGRESS, piece[:captured], len(piece), ts))
    return out


def spans(calls: list[Call]) -> Spans:
    return [(c.name, c.attributes.get("db.response.returned_rows"), c.attributes.get("db.query.text"))
            for c in calls]  # fmt: skip


# pg_psycopg_big_result: psycopg, one connection: 2000 rows of ~110 bytes (about 230 KB), then
# SELECT $1::int three times (the extended protocol: Parse, Bind, Describe, Execute, Sync)
PG_BIG = ("SELECT generate_series", 2000, "SELECT repeat(?, ?) || g AS v FROM generate_series(?, ?) g")
PG_AFTER = [("SELECT", 1, "SELECT $1::int AS after")] * 3


def parsed(parser: StreamParser, name: str, read: int, captured: int, left_out: Optional[int],
           side: str) -> Spans:  # fmt: skip
    calls = [c for s in reads(name, read, captured, left_out, side) for c in parser.feed(s)]
    return spans(calls + parser.close(10**12))


def pg(read: int, captured: int, left_out: Optional[int], side: str) -> tuple[Spans, PostgresParser]:
    parser = PostgresParser()
    return parsed(parser, "pg_psycopg_big_result", read, captured, left_out, side), parser


@pytest.mark.parametrize(
    ("read", "captured", "left_out"),
    [
        # (a client's read size, bytes of each read the kernel copied, the read never seen); what
        # the old reader made of it
        (16384, 16384, 12),  # a DataRow's middle: no span at all (a garbage length swallowed the rest)
        (8192, 16384, 24),  # the same with 8 KB reads
        (8192, 16384, 27),  # the big SELECT ended by the first statement's answer, that one lost
        (16384, 16384, 13),  # the same
        (4096, 4096, 55),  # the answer's last read, its ReadyForQuery with it: only the third statement
    ],
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_postgres_loss_inside_a_result_nobody_reported(read: int, captured: int, left_out: int, side: str) -> None:
    """The big SELECT cannot end (counted unpaired, resync counted); the statements the client
    sent after the last answer bytes seen get their own answers (none came through, or the first
    one's answer completed the big SELECT, before)."""
    got, parser = pg(read, captured, left_out, side)
    assert got == PG_AFTER
    assert (parser.stats.resyncs, parser.stats.unpaired) == (1, 1)


@pytest.mark.parametrize("captured", [4096, 16384])
@pytest.mark.parametrize("read", [8192, 16384])
def test_postgres_any_read_of_a_result_lost_unreported(read: int, captured: int) -> None:
    """Whichever read of the big answer is lost, the statements after it are the three spans they
    were (the big one too when the loss hid nothing but rows it could not count anyway)."""
    for left_out in range(230_000 // read + 1):
        got, _ = pg(read, captured, left_out, "client")
        assert got[-3:] == PG_AFTER, left_out
        assert len(got) == 3 or got[0][::2] == PG_BIG[::2], left_out


def test_postgres_result_whole() -> None:
    got, parser = pg(16384, 16384, None, "client")
    assert got == [PG_BIG, *PG_AFTER]
    assert (parser.stats.resyncs, parser.stats.unpaired) == (0, 0)


# my_pymysql_big_result: PyMySQL, one connection (SET NAMES, SET AUTOCOMMIT at connect): 2000 rows
# of ~105 bytes (about 210 KB), then SELECT <n> AS after three times (COM_QUERY)
MY_CONNECT = [("SET", None, "SET NAMES utf8mb4"), ("SET", None, "SET AUTOCOMMIT = ?")]
MY_BIG = ("SELECT seq_1_to_2000", 2000, "SELECT CONCAT(REPEAT(?, ?), seq) AS v FROM seq_1_to_2000")
MY_AFTER = [("SELECT", 1, "SELECT ? AS after")] * 3


def my(read: int, captured: int, left_out: Optional[int], side: str) -> tuple[Spans, MysqlParser]:
    parser = MysqlParser()
    return parsed(parser, "my_pymysql_big_result", read, captured, left_out, side), parser


@pytest.mark.parametrize(
    ("read", "captured", "left_out"),
    [
        # (a client's read size, bytes of each read the kernel copied, the read never seen); the old
        # reader made no span after the loss in each (any three bytes are a packet length)
        (16384, 16384, 5),  # a row's middle
        (16384, 16384, 13),  # the last read: the result's terminator with it
        (4096, 4096, 10),  # reads copied whole, smaller
        (65536, 4096, 0),  # the first read, its head only copied: the column count and definitions lost
    ],
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_mysql_loss_inside_a_result_nobody_reported(read: int, captured: int, left_out: int, side: str) -> None:
    got, parser = my(read, captured, left_out, side)
    assert got == MY_CONNECT + MY_AFTER
    assert (parser.stats.resyncs, parser.stats.unpaired) == (1, 1)


@pytest.mark.parametrize("captured", [4096, 16384])
@pytest.mark.parametrize("read", [4096, 16384])
def test_mysql_any_read_of_a_result_lost_unreported(read: int, captured: int) -> None:
    for left_out in range(210_000 // read + 1):
        got, _ = my(read, captured, left_out, "client")
        assert got[:2] == MY_CONNECT and got[-3:] == MY_AFTER, left_out
        assert len(got) == 5 or got[2][::2] == MY_BIG[::2], left_out


def test_mysql_result_whole() -> None:
    got, parser = my(16384, 16384, None, "client")
    assert got == [*MY_CONNECT, MY_BIG, *MY_AFTER]
    assert (parser.stats.resyncs, parser.stats.unpaired) == (0, 0)
