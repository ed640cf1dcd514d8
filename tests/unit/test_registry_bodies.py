"""The body bytes the HTTP parsers keep follow [capture]: a span can carry body_max_bytes only if
its parser kept that many (they kept 1024 whatever the setting said)."""

from __future__ import annotations

import hpack
import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.base import StreamParser
from hostagent.protocols.http2_frames import DATA, HEADERS, PREFACE, SETTINGS
from hostagent.protocols.http_common import BodyLimit
from hostagent.protocols.registry import body_limit, for_probes
from hostagent.settings import CaptureOverride, CaptureSettings
from tests.unit.test_http2 import frame


@pytest.mark.parametrize(
    ("capture", "limit"),
    [
        (CaptureSettings(), 1024),  # bodies off: what the parsers always kept
        (CaptureSettings(bodies=True, body_max_bytes=8192), 8192),
        (CaptureSettings(bodies=True, body_max_bytes=100), 1024),  # never below the default
        (CaptureSettings(bodies=False, body_max_bytes=8192), 1024),  # no span carries a body
        # one service's bodies, with its own limit or the base one
        (CaptureSettings(overrides=(CaptureOverride(service="a", bodies=True, body_max_bytes=65536),)), 65536),
        (CaptureSettings(body_max_bytes=4096, overrides=(CaptureOverride(service="a", bodies=True),)), 4096),
        (CaptureSettings(bodies=True, body_max_bytes=2048,
                         overrides=(CaptureOverride(service="a", body_max_bytes=16384),)), 16384),
    ],
)
def test_body_limit(capture: CaptureSettings, limit: int) -> None:
    assert body_limit(capture) == limit


def test_the_http_parsers_keep_the_limit() -> None:
    specs = {s.name: s for s in for_probes(frozenset({"http", "http2"}), None, BodyLimit(8192))}
    h1 = specs["http"].new_parser()
    request = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    h1.feed(Segment(Direction.EGRESS, request, len(request), 1))
    (call,) = h1.feed(Segment(Direction.INGRESS, response, len(response), 2))
    assert (len(call.request_body), call.request_size) == (5000, 5000)
    assert specs["http2"].new_parser()._body_limit.value == 8192
    default = {s.name: s for s in for_probes(frozenset({"http", "http2"}))}
    assert default["http2"].new_parser()._body_limit.value == 1024


def _h1_post(parser: StreamParser, ts: int) -> Call:
    request = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    parser.feed(Segment(Direction.EGRESS, request, len(request), ts))
    (call,) = parser.feed(Segment(Direction.INGRESS, response, len(response), ts + 1))
    return call


def _h2_post(parser: StreamParser, sid: int, ts: int) -> Call:
    out = b"" if sid > 1 else PREFACE + frame(SETTINGS, 0, 0, b"")
    block = hpack.Encoder().encode([(":method", "POST"), (":path", "/u"), (":scheme", "http"), (":authority", "h")])
    out += frame(HEADERS, 0x4, sid, block) + frame(DATA, 0x1, sid, b"x" * 5000)
    parser.feed(Segment(Direction.EGRESS, out, len(out), ts))
    answer = frame(HEADERS, 0x5, sid, hpack.Encoder().encode([(":status", "200")]))
    (call,) = parser.feed(Segment(Direction.INGRESS, answer, len(answer), ts + 1))
    return call


@pytest.mark.parametrize("protocol", ["http", "http2"])
def test_a_limit_change_reaches_the_next_message_of_an_open_connection(protocol: str) -> None:
    """The limit is one value the parsers of a tracker share (set on a settings change): raised or
    lowered, it applies to the next message of a connection already open (a keep-alive pool's),
    not only to connections opened after the change."""
    limit = BodyLimit(1024)
    (spec,) = for_probes(frozenset({protocol}), None, limit)
    parser = spec.new_parser()
    post = (lambda n: _h1_post(parser, n)) if protocol == "http" else (lambda n: _h2_post(parser, 2 * n + 1, n))
    assert len(post(1).request_body) == 1024
    limit.value = 8192
    assert len(post(3).request_body) == 5000
    limit.value = 2048
    assert len(post(5).request_body) == 2048
