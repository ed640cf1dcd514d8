"""RoleGuess (hostagent.protocols.base): the segments a database parser holds until it knows which
direction is the client's, as PostgreSQL, MySQL and Redis use it."""

from __future__ import annotations

from typing import Optional

from hostagent.model import Direction, Role, Segment
from hostagent.protocols.base import HELD_BYTES_MAX, HELD_SEGMENTS_MAX, ParserStats, RoleGuess
from hostagent.protocols.redis import RedisParser

OUT, IN = Direction.EGRESS, Direction.INGRESS


def seg(direction: Direction, data: bytes) -> Segment:
    return Segment(direction, data, len(data), 0)


def test_held_until_the_joined_prefix_of_one_direction_decides() -> None:
    seen: list[tuple[bytes, Direction]] = []

    def guess(data: bytes, direction: Direction) -> Optional[Direction]:
        seen.append((data, direction))
        return direction if data.startswith(b"HELLO") else None

    roles = RoleGuess(guess, ParserStats())
    first, other, second, later = seg(OUT, b"HEL"), seg(IN, b"zz"), seg(OUT, b"LO world"), seg(IN, b"ok")
    assert roles.ready(first) == [] and roles.ready(other) == [] and roles.client is None
    assert roles.ready(second) == [first, other, second]  # all held, in arrival order
    assert (roles.client, roles.role) == (OUT, Role.CLIENT)
    assert roles.ready(later) == [later]  # known: nothing held, no guess
    # each guess saw only its own direction's bytes, joined across segments
    assert seen == [(b"HEL", OUT), (b"zz", IN), (b"HELLO world", OUT)]
    server = RoleGuess(lambda data, d: IN, ParserStats())
    assert server.ready(seg(OUT, b"+OK")) != [] and server.role == Role.SERVER


def test_the_guess_sees_at_most_64_bytes() -> None:
    lengths: list[int] = []
    roles = RoleGuess(lambda data, d: lengths.append(len(data)) or None, ParserStats())
    roles.ready(seg(OUT, b"x" * 50))
    roles.ready(seg(OUT, b"y" * 50))
    assert lengths == [50, 64]


def test_undecided_bytes_are_bounded_and_each_dropped_segment_counted() -> None:
    stats = ParserStats()
    roles = RoleGuess(lambda data, d: None, stats)
    for _ in range(HELD_SEGMENTS_MAX + 10):
        roles.ready(seg(IN, b"?"))
    assert stats.resyncs == 10  # one per segment past the limit
    stats = ParserStats()
    roles = RoleGuess(lambda data, d: None, stats)
    big = seg(IN, b"b" * 1000)
    for _ in range(HELD_BYTES_MAX // 1000 + 3):
        roles.ready(big)
    assert stats.resyncs == 3  # 5,000 bytes held is over 4,096: the oldest goes, each time


def test_a_redis_connection_picked_up_mid_stream_starts_with_the_reply() -> None:
    """RESP as redis-server and its clients write it: a reply seen first names the other side as
    the client (it is counted as unpaired); the command that follows pairs with the next reply."""
    p = RedisParser()
    assert p.feed(Segment(IN, b"+OK\r\n", 5, 1)) == []  # an answer: the client is the other side
    assert p.feed(Segment(OUT, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 20, 2)) == []
    (call,) = p.feed(Segment(IN, b"$1\r\nv\r\n", 7, 3))
    assert (call.name, call.role) == ("GET", p.role) and p.role.name == "CLIENT"
    assert p.stats.resyncs == 0 and p.stats.unpaired == 1  # the reply whose command came before
