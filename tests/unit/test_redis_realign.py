"""A Redis reply reader that lost part of a big bulk string without being told resynchronises.

The kernel tells the tracker about the calls it did not capture (``lost()``), but not every loss
is reported (the capture program says which are not: an inherited or dup()'d entry's, a shed
mark that matched by chance). Inside a bulk string the reader then waits for bytes that never
come and takes every later reply for the rest of the string: a connection that carried a 4 MB
reply mid-way made no span again. Recording: tests/fixtures/db/redis_big_reply.json (a raw
socket: SET big <20000 x>, GET big, INCR after three times), the GET's reply cut into the 4 KB
reads a client makes, each case leaving some out unannounced; the same for the SET's command, cut
into the writes a client makes of a big value (the request side).
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


def writes(piece: int, captured: int, left_out: int, side: str) -> list[Segment]:
    """The recording as one side's segments, the SET's 20032-byte command in ``piece``-byte writes
    (a client writes a big value in pieces; a server reads it so), each copied ``captured`` bytes
    as the kernel does, write number ``left_out`` never seen, nothing said."""
    out: list[Segment] = []
    ts = 0
    for who, data in chunks("redis_big_reply"):
        pieces = [data[i : i + piece] for i in range(0, len(data), piece)] if who == "c" else [data]
        for n, chunk in enumerate(pieces):
            ts += 1000
            if len(pieces) > 1 and n == left_out:
                continue
            mine = (who == "c") == (side == "client")
            out.append(Segment(Direction.EGRESS if mine else Direction.INGRESS, chunk[:captured], len(chunk), ts))
    return out


@pytest.mark.parametrize(
    ("piece", "captured", "left_out"),
    [
        # (write size, bytes of each the kernel copied, the write never seen): the old reader took
        # every later command for the rest of the 20000-byte value (no span again)
        (4096, 4096, 1),
        (4096, 4096, 4),  # the value's last bytes and the command's CRLF
        (4096, 64, 2),  # the writes' heads only copied
        (16384, 16384, 1),
        (16384, 4096, 1),
    ],
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_loss_inside_a_big_command_nobody_reported(piece: int, captured: int, left_out: int, side: str) -> None:
    """The SET's reply comes while its value is still being read: the server had read it whole,
    so bytes of it were lost; the next write, nothing but whole commands, is read afresh. The SET
    makes no span (its reply counted unpaired), the GET and the INCRs theirs."""
    parser = RedisParser()
    calls = [c for seg in writes(piece, captured, left_out, side) for c in parser.feed(seg)] + parser.close(10**12)
    assert names(calls) == ALL[1:]
    assert (parser.stats.resyncs, parser.stats.unpaired) == (1, 1)


@pytest.mark.parametrize("side", ["client", "server"])
def test_a_big_command_read_whole_in_pieces(side: str) -> None:
    parser = RedisParser()
    calls = [c for seg in writes(4096, 4096, -1, side) for c in parser.feed(seg)] + parser.close(10**12)
    assert names(calls) == ALL
    assert (parser.stats.resyncs, parser.stats.unpaired) == (0, 0)


@pytest.mark.parametrize(("piece", "captured"), [(4096, 4096), (16384, 16384), (16384, 4096)])
@pytest.mark.parametrize("side", ["client", "server"])
def test_a_big_command_whose_head_was_lost_makes_no_command_of_its_value(piece: int, captured: int,
                                                                          side: str) -> None:  # fmt: skip
    """The SET's first write (its array header, its name) never seen: the value's bytes up to the
    command's last CRLF are one bare line, which the reader takes for an inline command; a line of
    64 x's names no command, so it makes no span (the old reader made 'XXXX...' of it, paired with
    the SET's +OK). The reply is counted unpaired; the commands after it are their own spans."""
    parser = RedisParser()
    calls = [c for seg in writes(piece, captured, 0, side) for c in parser.feed(seg)] + parser.close(10**12)
    assert names(calls) == ALL[1:]
    assert parser.stats.unpaired == 1


def test_a_reported_loss_clears_what_an_unreported_one_would_have_been_told_by() -> None:
    """A reply to the command being read, then lost() (the loss reported): the readers start over,
    and the next command is read as it comes, nothing counted as a resync of an unreported loss."""
    parser = RedisParser()
    first, *_ = writes(4096, 4096, -1, "client")  # the SET's first write: its value begun
    incr = b"*2\r\n$4\r\nINCR\r\n$5\r\nafter\r\n"
    parser.feed(first)
    parser.feed(Segment(Direction.INGRESS, b"+OK\r\n", 5, 10_000))
    parser.lost()
    calls = parser.feed(Segment(Direction.EGRESS, incr, len(incr), 11_000))
    calls += parser.feed(Segment(Direction.INGRESS, b":1\r\n", 4, 12_000))
    assert names(calls) == [("INCR", "4")]
    assert parser.stats.resyncs == 0
