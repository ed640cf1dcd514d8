"""A Redis reply reader that lost part of a big bulk string without being told resynchronises.

The kernel tells the tracker about the calls it did not capture (``lost()``), but not every loss
is reported (the capture program says which are not: an inherited or dup()'d entry's, a shed
mark that matched by chance). Inside a bulk string the reader then waits for bytes that never
come and takes every later reply for the rest of the string: a connection that carried a 4 MB
reply mid-way made no span again. Recording: tests/fixtures/db/redis_big_reply.json (a raw
socket: SET big <20000 x>, GET big, INCR after three times), the GET's reply cut into the 4 KB
reads a client makes, each case leaving some out unannounced.
"""

from __future__ import annotations

from typing import Optional

import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.redis import RedisParser
from tests.support.db_fixtures import chunks

READ = 4096
Names = list[tuple[str, Optional[str]]]  # span name, its reply (the INCRs' counts)


def reads(left_out: tuple[int, ...] = (), pipelined: bool = False, side: str = "client",
          value: bytes = b"x") -> list[Segment]:  # fmt: skip
    """The recording as one side's segments, the GET's 20010-byte reply in READ-byte reads (5),
    without the reads numbered in ``left_out``. ``pipelined``: the first INCR written right
    after the GET, before its reply (redis-py's pipeline does this). ``value``: what the 20000
    bytes of the stored string are made of, repeated (the recording's are ``x``)."""
    recorded = [(who, data.replace(b"x" * 20000, (value * 20000)[:20000])) for who, data in chunks("redis_big_reply")]
    if pipelined:
        recorded.insert(3, recorded.pop(4))
    out: list[Segment] = []
    ts = 0
    for who, data in recorded:
        pieces = [data[i : i + READ] for i in range(0, len(data), READ)] if len(data) == 20010 else [data]
        for n, piece in enumerate(pieces):
            ts += 1000
            if len(pieces) > 1 and n in left_out:
                continue
            mine = (who == "c") == (side == "client")
            out.append(Segment(Direction.EGRESS if mine else Direction.INGRESS, piece, len(piece), ts))
    return out


def names(calls: list[Call]) -> Names:
    return [(c.name, None if c.name != "INCR" else str(c.response_size)) for c in calls]


ALL: Names = [("SET", None), ("GET", None), ("INCR", "4"), ("INCR", "4"), ("INCR", "4")]


@pytest.mark.parametrize(
    ("left_out", "expected", "unpaired"),
    [
        ((), ALL, 0),
        # a middle read lost: the GET cannot end (counted unpaired), the INCRs the client sent after
        # the last reply bytes seen are replied to by the next values
        ((2,), [("SET", None), ("INCR", "4"), ("INCR", "4"), ("INCR", "4")], 1),
        ((1, 2), [("SET", None), ("INCR", "4"), ("INCR", "4"), ("INCR", "4")], 1),
        # the reply's last read lost (its CRLF with it)
        ((4,), [("SET", None), ("INCR", "4"), ("INCR", "4"), ("INCR", "4")], 1),
    ],
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_loss_inside_a_bulk_string_nobody_reported(
    left_out: tuple[int, ...], expected: Names, unpaired: int, side: str
) -> None:
    parser = RedisParser()
    calls = [c for seg in reads(left_out, side=side) for c in parser.feed(seg)] + parser.close(10**12)
    assert names(calls) == expected
    assert (parser.stats.resyncs, parser.stats.unpaired) == (1 if left_out else 0, unpaired)


@pytest.mark.parametrize("value", [b"x", b":1\r\n"])
def test_a_pipelined_command_waits_for_the_reply_in_flight(value: bytes) -> None:
    """The INCR written before the GET's reply came: the reply's reads are its own bytes, not a
    loss, even when each read is made of whole replies (a string of ``:1\\r\\n``, read in 4 KB
    from a multiple of 4); the INCR's reply follows the whole bulk string."""
    parser = RedisParser()
    calls = [c for seg in reads(pipelined=True, value=value) for c in parser.feed(seg)]
    assert names(calls) == ALL
    assert (parser.stats.resyncs, parser.stats.unpaired) == (0, 0)
