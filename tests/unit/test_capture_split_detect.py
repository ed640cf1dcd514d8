"""Protocol detection over split first messages, as real clients read them.

mysql-connector-python (pure Python) reads every MySQL packet as a 4-byte header and then its
body: its first two reads are ``64 00 00 00`` and the greeting's 100 bytes, neither of which is
a greeting on its own. The tracker must judge the joined bytes of one direction and hand the
parser every segment it held while deciding, or the whole connection is lost (seen live: zero
spans from mysql-connector). Bytes from tests/fixtures/db/my_connector_prepared.json (MariaDB
10.11 and mysql-connector-python, recorded by tests/support/record_db_fixtures.py).
"""

from __future__ import annotations

import socket

import pytest

from hostagent.capture.tracker import ConnectionTracker
from hostagent.model import Call, CaptureEvent, Direction, EventKind, Role
from hostagent.protocols.registry import for_probes
from tests.support.db_fixtures import chunks

SPECS = for_probes(frozenset({"postgres", "mysql", "redis", "http"}))


def packets(data: bytes) -> list[bytes]:
    """MySQL packets cut as the connector reads them: 3-byte length + sequence id, then body."""
    out = []
    while data:
        length = int.from_bytes(data[:3], "little")
        out += [data[:4], data[4 : 4 + length]]
        data = data[4 + length :]
    return out


def events(side: str, split_reads: bool) -> list[CaptureEvent]:
    """The connector's view (side="client") or mariadbd's, each read/write one event."""
    out = []
    ts = 0
    for who, data in chunks("my_connector_prepared"):
        mine = (who == "c") == (side == "client")
        direction = Direction.EGRESS if mine else Direction.INGRESS
        pieces = packets(data) if split_reads and direction == Direction.INGRESS else [data]
        for piece in pieces:
            ts += 1000
            out.append(CaptureEvent(EventKind.DATA, ts, 7, 7, 3, direction=direction, size=len(piece), data=piece,
                                    family=socket.AF_INET, sock_type=socket.SOCK_STREAM, peer_addr="127.0.0.1",
                                    peer_port=3306))  # fmt: skip
    return out


def run(evs: list[CaptureEvent]) -> tuple[list[Call], dict[str, int]]:
    t = ConnectionTracker(lambda: SPECS)
    calls: list[Call] = []
    for e in evs:
        calls += t.handle(e)
    return calls, t.stats()


@pytest.mark.parametrize("side, role", [("client", Role.CLIENT), ("server", Role.SERVER)])
def test_header_then_body_reads_give_the_same_calls_as_whole_reads(side: str, role: Role) -> None:
    whole, _ = run(events(side, split_reads=False))
    split, stats = run(events(side, split_reads=True))
    assert stats["unknown"] == 0 and stats["detected_mysql"] == 1
    assert [c.name for c in split] == [c.name for c in whole]
    assert [c.name for c in split] == [
        "SET", "SET", "SELECT people", "SELECT people", "UPDATE people", "SELECT missing_table"]  # fmt: skip
    assert all(c.role == role for c in split)
    assert [c.attributes.get("db.query.text") for c in split] == [c.attributes.get("db.query.text") for c in whole]


def test_three_segments_without_a_match_still_mute() -> None:
    t = ConnectionTracker(lambda: SPECS)
    t.handle(CaptureEvent(EventKind.ACCEPT, 0, 7, 7, 3, family=socket.AF_INET, sock_type=socket.SOCK_STREAM))
    for ts, piece in enumerate((b"\x00\x01", b"\x02\x03", b"\x04\x05")):
        t.handle(CaptureEvent(EventKind.DATA, ts + 1, 7, 7, 3, direction=Direction.INGRESS, size=2, data=piece,
                              family=socket.AF_INET, sock_type=socket.SOCK_STREAM))  # fmt: skip
    assert t.stats()["unknown"] == 1
