"""ConnectionTracker while probes are turned off and on again at runtime (hostagentctl probes).

A socket whose probe goes off is muted in the kernel; when the probe is back on it must be
unmuted and parsed again from the next message, and nothing seen before (or held for detection
while the probe was off) may be paired with an answer seen after. Bytes: nginx (tests/fixtures/
http1) and the redis-py-like client of the acceptance run's probe_toggle.py against redis-server
7 (strace of the client: its writes, and the server's "+OK").
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest

from hostagent.capture.tracker import ConnectionTracker
from hostagent.model import Call, Role
from hostagent.protocols import http1, redis
from hostagent.protocols.base import ProtocolSpec
from tests.fixtures.http1.load import chunks
from tests.unit.test_capture import FD, IN, OUT, PID, Recorder, data, feed, opened

REQ, RESP = (c for _, c in chunks("nginx_get_query"))  # curl GET /index.html?a=1&b=two, nginx 200
SET_DURING = b"*3\r\n$3\r\nSET\r\n$8\r\nC_during\r\n$1\r\n1\r\n"
SET_AFTER = b"*3\r\n$3\r\nSET\r\n$7\r\nC_after\r\n$1\r\n1\r\n"
OK = b"+OK\r\n"


class Switch:
    """The enabled protocols as the settings give them, with the tracker's mute/unmute calls."""

    def __init__(self, *specs: ProtocolSpec) -> None:
        self.specs = specs
        self.muted = Recorder()
        self.unmuted = Recorder()
        self.tracker = ConnectionTracker(lambda: self.specs, on_mute=self.muted, on_unmute=self.unmuted)

    def set(self, *specs: ProtocolSpec) -> None:
        """A probe change: the daemon refreshes the tracker at once (Agent.apply_probes)."""
        self.specs = specs
        self.tracker.refresh()


def spans(calls: list[Call]) -> list[tuple[str, int, int]]:
    return [(c.name, c.start_ns, c.end_ns) for c in calls]


def test_parsing_socket_is_unmuted_and_parsed_from_the_next_request() -> None:
    sw = Switch(http1.SPEC)
    assert spans(feed(sw.tracker, [data(1, IN, REQ), data(2, OUT, RESP)])) == [("GET", 1, 2)]
    sw.tracker.handle(data(3, IN, REQ))  # a request whose answer the kernel will not show
    sw.set()
    assert (sw.muted.muted, sw.unmuted.muted) == ([(PID, FD)], [])
    assert sw.tracker.handle(data(4, OUT, RESP)) == []  # in flight before the kernel saw the mute
    sw.set(http1.SPEC)
    assert sw.unmuted.muted == [(PID, FD)]
    calls = feed(sw.tracker, [
        data(10, OUT, RESP),  # the answer to a request sent while muted: nothing to pair it with
        data(11, IN, REQ), data(12, OUT, RESP),
        data(13, IN, REQ), data(14, OUT, RESP),
    ])  # fmt: skip
    assert spans(calls) == [("GET", 11, 12), ("GET", 13, 14)]
    assert sw.muted.muted == [(PID, FD)]


def test_bytes_held_while_the_probe_was_off_never_pair_with_a_later_answer() -> None:
    """probe_toggle.py's connection C: opened and used while redis was off (held by detection,
    two segments, no protocol on to match), then used again after: one SET, the later one."""
    sw = Switch(http1.SPEC)
    assert feed(sw.tracker, [data(1, OUT, SET_DURING), data(2, IN, OK)]) == []
    sw.set(http1.SPEC, redis.SPEC)
    calls = feed(sw.tracker, [data(10, OUT, SET_AFTER), data(11, IN, OK)])
    assert [(c.name, c.role, c.start_ns, c.end_ns) for c in calls] == [("SET", Role.CLIENT, 10, 11)]
    assert (sw.muted.muted, sw.unmuted.muted) == ([], [])


def test_unknown_while_its_protocol_was_off_is_detected_again() -> None:
    sw = Switch(http1.SPEC)
    feed(sw.tracker, [opened(0), data(1, OUT, SET_DURING), data(2, IN, OK), data(3, OUT, SET_DURING)])
    assert sw.muted.muted == [(PID, FD)] and sw.tracker.stats()["unknown"] == 1
    sw.set(http1.SPEC, redis.SPEC)
    assert sw.unmuted.muted == [(PID, FD)]
    calls = feed(sw.tracker, [data(10, OUT, SET_AFTER), data(11, IN, OK)])
    assert spans(calls) == [("SET", 10, 11)]


@pytest.mark.parametrize(
    "events",
    [
        pytest.param([opened(0)] + [data(1, IN, b"\x16\x03\x01 not http")] * 3, id="unknown-with-every-protocol-on"),
        pytest.param([data(i, IN if side == "client" else OUT, c) for i, (side, c) in
                      enumerate(chunks("py_upgrade_101"), 1)], id="upgraded-101"),
    ],
)  # fmt: skip
def test_mutes_not_due_to_a_probe_stay(events: list) -> None:
    sw = Switch(http1.SPEC, redis.SPEC)
    feed(sw.tracker, events)
    assert sw.muted.muted == [(PID, FD)]
    sw.set(http1.SPEC)
    sw.set(http1.SPEC, redis.SPEC)
    assert (sw.muted.muted, sw.unmuted.muted) == ([(PID, FD)], [])


def test_an_equal_protocol_with_another_parser_factory_mutes_nothing() -> None:
    """[capture] raw_sql swaps the SQL specs for ones with another new_parser: still on."""
    sw = Switch(http1.SPEC)
    sw.tracker.handle(data(1, IN, REQ))
    sw.set(replace(http1.SPEC, new_parser=partial(http1.SPEC.new_parser)))  # as registry.for_probes
    assert sw.muted.muted == []
    assert spans(sw.tracker.handle(data(2, OUT, RESP))) == [("GET", 1, 2)]
