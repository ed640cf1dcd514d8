"""``Http1Parser.feed_bytes`` (the tracker's path, no Segment) gives exactly what ``feed`` gives,
and what is derived once per distinct request head never crosses roles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols.http1 import Http1Parser
from tests.fixtures.http1.load import chunks, direction

NAMES = ["nginx_get_query", "nginx_chunked_gzip", "nginx_204", "nginx_304", "nginx_big_body",
         "gunicorn_flask_query"]  # fmt: skip


def _segments(name: str, traced: str, cuts: list[int], keep: list[int]) -> list[Segment]:
    """The recorded exchange re-cut at ``cuts`` (byte offsets per chunk), each piece's capture
    shortened to ``keep`` bytes when given (the kernel copied a prefix only)."""
    out = []
    ts = 0
    for i, (side, data) in enumerate(chunks(name)):
        at = sorted({c % (len(data) + 1) for c in cuts[i::6]} | {0, len(data)})
        for a, b in zip(at, at[1:]):
            ts += 1000
            piece = data[a:b]
            k = keep[(i + a) % len(keep)] if keep else len(piece)
            out.append(Segment(direction(side, traced), piece[: max(k, 0)], len(piece), ts))
    return out


def _run(segs: list[Segment], raw: bool) -> tuple[list[Call], tuple[int, int, int]]:
    p = Http1Parser()
    calls: list[Call] = []
    for s in segs:
        calls += p.feed_bytes(s.direction, s.data, s.size, s.ts_ns) if raw else p.feed(s)
    calls += p.close(10**9)
    return calls, (p.stats.resyncs, p.stats.unpaired, p.stats.truncated)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    traced=st.sampled_from(["client", "server"]),
    cuts=st.lists(st.integers(0, 5000), max_size=30),
    keep=st.lists(st.integers(0, 400), max_size=4),
)
def test_feed_bytes_is_feed(name: str, traced: str, cuts: list[int], keep: list[int]) -> None:
    segs = _segments(name, traced, cuts, keep)
    assert _run(segs, raw=True) == _run(segs, raw=False)


def test_head_derived_attributes_are_per_role() -> None:
    """The same request bytes seen by a server, then a client, then a server again: url.full is
    only ever on the client's span, though the parsed head is shared."""
    req, resp = (c for _, c in chunks("nginx_get_query"))
    seen = []
    for role in (Role.SERVER, Role.CLIENT, Role.SERVER):
        p = Http1Parser()
        mine = Direction.INGRESS if role == Role.SERVER else Direction.EGRESS
        p.feed_bytes(mine, req, len(req), 1)
        (call,) = p.feed_bytes(Direction(1 - mine), resp, len(resp), 2)
        seen.append((call.role, call.attributes.get("url.full")))
    assert seen == [
        (Role.SERVER, None),
        (Role.CLIENT, "http://127.0.0.1:18220/index.html?a=1&b=two"),  # curl's Host header
        (Role.SERVER, None),
    ]
