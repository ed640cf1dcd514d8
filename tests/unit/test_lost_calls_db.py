"""Database parsers after calls lost in the kernel: whichever single answer (or request) of a
recorded session is lost, ``lost()`` before the next segment keeps every later call paired with
its own answer. Without it, one lost answer can shift the pairs that follow.

Sessions recorded from real servers (tests/fixtures/db, tests/support/record_db_fixtures.py).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.mysql import MysqlParser
from hostagent.protocols.postgres import PostgresParser
from hostagent.protocols.redis import RedisParser
from tests.support.db_fixtures import run, segments

SESSIONS: dict[str, Callable[[], Any]] = {
    "redis_py_pipeline100": RedisParser,
    "redis_cli": RedisParser,
    "pg_psql_multi": PostgresParser,
    "pg_psycopg_prepared": PostgresParser,
    "my_cli_queries": MysqlParser,
    "my_pymysql": MysqlParser,
}


def key(call: Call) -> tuple[object, ...]:
    """A pair is right when its request (start) and its answer (end, error) are the ones the full
    session paired. Names and attributes may differ: a lost Parse takes the statement's text with
    it, a lost startup message the database name."""
    return call.start_ns, call.end_ns, call.error_type


def replay_losing(new_parser: Callable[[], Any], segs: list[Segment], lost_at: int, tell: bool) -> list[Call]:
    parser = new_parser()
    calls: list[Call] = []
    for i, seg in enumerate(segs):
        if i == lost_at:
            continue
        if tell and i == lost_at + 1:
            calls += parser.lost()
        calls += parser.feed(seg)
    calls += parser.close(10**12)
    return calls


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_a_lost_segment_never_pairs_a_request_with_another_answer(name: str) -> None:
    segs = segments(name, "client")
    full = {key(c) for c in run(SESSIONS[name](), segs)}
    answers = [i for i, s in enumerate(segs) if s.direction == Direction.INGRESS]
    kept_any = 0
    # from 1: losing the first segment is a connection seen from its second one on, where the
    # parsers' direction guess is what is tested (their own tests), not lost()
    for lost_at in range(1, len(segs) - 1):
        calls = replay_losing(SESSIONS[name], segs, lost_at, tell=True)
        wrong = [c for c in calls if key(c) not in full and c.error_type is None]
        assert wrong == [], f"segment {lost_at} lost: {[(c.name, c.start_ns, c.end_ns) for c in wrong]}"
        kept_any += len(calls)
    assert kept_any > 0 and answers


def test_without_lost_a_lost_reply_in_a_redis_pipeline_shifts_the_pairs() -> None:
    """What lost() prevents, shown on the same recording (100 commands, replies in order)."""
    name = "redis_py_pipeline100"
    segs = segments(name, "client", "chunks")
    full = {key(c) for c in run(RedisParser(), segs)}
    shifted = 0
    for lost_at in [i for i, s in enumerate(segs) if s.direction == Direction.INGRESS][:-1]:
        calls = replay_losing(RedisParser, segs, lost_at, tell=False)
        shifted += sum(1 for c in calls if key(c) not in full and c.error_type is None)
    assert shifted > 0
