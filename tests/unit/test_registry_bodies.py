"""The body bytes the HTTP parsers keep follow [capture]: a span can carry body_max_bytes only if
its parser kept that many (they kept 1024 whatever the setting said)."""

from __future__ import annotations

import pytest

from hostagent.model import Direction, Segment
from hostagent.protocols.registry import body_limit, for_probes
from hostagent.settings import CaptureOverride, CaptureSettings


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
    specs = {s.name: s for s in for_probes(frozenset({"http", "http2"}), None, 8192)}
    h1 = specs["http"].new_parser()
    request = b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    h1.feed(Segment(Direction.EGRESS, request, len(request), 1))
    (call,) = h1.feed(Segment(Direction.INGRESS, response, len(response), 2))
    assert (len(call.request_body), call.request_size) == (5000, 5000)
    assert specs["http2"].new_parser()._body_limit == 8192
    default = {s.name: s for s in for_probes(frozenset({"http", "http2"}))}
    assert default["http2"].new_parser()._body_limit == 1024
