"""HTTP/1.x parser against exchanges recorded from real servers and clients.

The fixtures (tests/fixtures/http1/*.json, made by record.py there) hold every read a relay made
between curl / Python http.client / a raw socket and nginx 1.22 / Python http.server / gunicorn.
Segment i of a fixture gets ts_ns = 1000 * (i + 1); the connection closes at CLOSE_TS.
"""

from __future__ import annotations

from typing import Optional

import pytest

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols.http1 import SPEC, Http1Parser, looks_like
from tests.fixtures.http1.load import chunks, segments

CLOSE_TS = 99_000
LH = "localhost"


def run(segs: list[Segment], close_ts: Optional[int] = CLOSE_TS) -> tuple[list[Call], Http1Parser]:
    parser = Http1Parser()
    calls: list[Call] = []
    for seg in segs:
        calls += parser.feed(seg)
    if close_ts is not None:
        calls += parser.close(close_ts)
    return calls, parser


def attrs(
    path: str,
    port: int,
    status: int,
    *,
    method: str = "GET",
    query: str = "",
    host: str = "127.0.0.1",
    ua: str = "curl/7.88.1",
    req_body: Optional[int] = None,
    resp_body: Optional[int] = None,
    version: str = "1.1",
) -> dict:
    """Server-side attributes as the stable HTTP conventions name them."""
    out: dict = {"http.request.method": method, "url.path": path}
    if query:
        out["url.query"] = query
    out |= {
        "url.scheme": "http",
        "server.address": host,
        "server.port": port,
        "network.protocol.version": version,
    }
    if ua:
        out["user_agent.original"] = ua
    if req_body is not None:
        out["http.request.body.size"] = req_body
    out["http.response.status_code"] = status
    if resp_body is not None:
        out["http.response.body.size"] = resp_body
    return out


# (fixture, [(name, start_ns, end_ns, error_type, attributes, request_size, response_size)]),
# seen by the server process (requests arrive: INGRESS, role SERVER).
RECORDED = [
    # curl GET /index.html?a=1&b=two -> nginx static file, Content-Length: 17
    ("nginx_get_query", [("GET", 1000, 2000, None,
                          attrs("/index.html", 18220, 200, query="a=1&b=two", resp_body=17), 0, 17)]),
    # curl -d name=alice&x=1 -> Python http.server; response head and body in two writes
    ("py_post_body", [("POST", 1000, 3000, None,
                       attrs("/echo", 18221, 200, method="POST", req_body=14, resp_body=12), 14, 12)]),
    # Python http.client, one connection, three GETs (no User-Agent sent)
    ("nginx_keepalive_3", [
        ("GET", 1000, 2000, None, attrs("/", 18222, 200, ua="", resp_body=17), 0, 17),
        ("GET", 3000, 4000, None, attrs("/big.txt", 18222, 200, ua="", resp_body=4053), 0, 4053),
        ("GET", 5000, 6000, None,
         attrs("/index.html", 18222, 200, query="page=2", ua="", resp_body=17), 0, 17),
    ]),
    # three requests in one write; nginx answers 200, then 404 + 204 in one read. Host: localhost
    ("nginx_pipelined", [
        ("GET", 1000, 2000, None, attrs("/index.html", 80, 200, host=LH, ua="", resp_body=17), 0, 17),
        ("GET", 1000, 3000, None, attrs("/missing", 80, 404, host=LH, ua="", resp_body=153), 0, 153),
        ("GET", 1000, 3000, None, attrs("/nocontent", 80, 204, host=LH, ua=""), 0, 0),
    ]),
    # nginx gzip -> Transfer-Encoding: chunked; the size is the payload's, without the chunk framing
    # (3125 bytes after the head), still gzip-compressed (4053 decoded), as the semconv say
    ("nginx_chunked_gzip", [("GET", 1000, 2000, None, attrs("/gz", 18224, 200, resp_body=3113), 0, 3113)]),
    # http.server writing 3 chunks in 3 writes, then "0" + trailer X-Checksum in a 4th: 12 + 29 + 5
    # bytes of data (87 with the framing and the trailer)
    ("py_chunked_trailer", [("GET", 1000, 5000, None, attrs("/chunked", 18225, 200, resp_body=46), 0, 46)]),
    ("nginx_big_body", [("GET", 1000, 2000, None, attrs("/big.txt", 18226, 200, resp_body=4053), 0, 4053)]),
    # HEAD: Content-Length: 4053 in the head, but no body follows
    ("nginx_head", [("HEAD", 1000, 2000, None, attrs("/big.txt", 18227, 200, method="HEAD"), 0, 0)]),
    # Expect: 100-continue; "HTTP/1.1 100 Continue" is skipped, the body follows, then 200
    ("py_expect_100", [("POST", 1000, 5000, None,
                        attrs("/echo", 18228, 200, method="POST", req_body=300, resp_body=13), 300, 13)]),
    ("nginx_204", [("GET", 1000, 2000, None, attrs("/nocontent", 18229, 204), 0, 0)]),
    # curl --http1.0: nginx answers "HTTP/1.1 200 OK"; the exchange's version is the request's
    ("nginx_http10", [("GET", 1000, 2000, None,
                       attrs("/index.html", 27820, 200, version="1.0", resp_body=17), 0, 17)]),
    # If-None-Match with the file's ETag -> 304 without a body
    ("nginx_304", [("GET", 1000, 2000, None, attrs("/index.html", 18230, 304), 0, 0)]),
    # no Content-Length, no chunking: the body ends at close; end_ns is its last segment, not the close
    ("py_close_delimited", [("GET", 1000, 2000, None, attrs("/close", 18231, 200, resp_body=24), 0, 24)]),
    # 500 -> the server span is an error with error.type "500"
    ("py_500", [("GET", 1000, 2000, "500", attrs("/fail", 18232, 500, resp_body=15), 0, 15)]),
    ("gunicorn_flask_query", [("GET", 1000, 2000, None, attrs(
        "/users/42", 18233, 200, query="expand=orders&limit=5", ua="probe/1.0", resp_body=40), 0, 40)]),
    # 101 Switching Protocols: the Call is emitted, the WebSocket frames after it are not HTTP
    ("py_upgrade_101", [("GET", 1000, 2000, None, attrs("/ws", 80, 101, ua=""), 0, 0)]),
]  # fmt: skip


def summary(call: Call) -> tuple:
    return (
        call.name, call.start_ns, call.end_ns, call.error_type, call.attributes, call.request_size,
        call.response_size,
    )  # fmt: skip


@pytest.mark.parametrize(("fixture", "expected"), RECORDED, ids=[r[0] for r in RECORDED])
def test_recorded_exchange_server_side(fixture: str, expected: list[tuple]) -> None:
    calls, parser = run(segments(fixture, traced="server"))
    assert [summary(c) for c in calls] == expected
    assert all(c.protocol == "http" and c.role == Role.SERVER for c in calls)
    assert parser.stats.resyncs == 0 and parser.stats.unpaired == 0


@pytest.mark.parametrize(
    ("fixture", "request_line", "status_line", "version"),
    [
        ("nginx_http10", b"GET /index.html HTTP/1.0\r\n", b"HTTP/1.1 200 OK\r\n", "1.0"),
        ("nginx_get_query", b"GET /index.html?a=1&b=two HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", "1.1"),
    ],
)
@pytest.mark.parametrize("traced", ["client", "server"])
def test_protocol_version_is_the_requests(fixture: str, request_line: bytes, status_line: bytes, version: str,
                                          traced: str) -> None:
    (client, request), (server, response) = chunks(fixture)
    assert (client, server) == ("client", "server")
    assert request.startswith(request_line) and response.startswith(status_line)
    (call,), _ = run(segments(fixture, traced=traced))
    assert call.attributes["network.protocol.version"] == version


def test_client_side_roles_errors_and_url_full() -> None:
    calls, _ = run(segments("nginx_pipelined", traced="client"))
    assert [(c.role, c.error_type, c.attributes["url.full"]) for c in calls] == [
        (Role.CLIENT, None, "http://localhost/index.html"),
        (Role.CLIENT, "404", "http://localhost/missing"),  # 4xx is an error for the client only
        (Role.CLIENT, None, "http://localhost/nocontent"),
    ]
    calls, _ = run(segments("gunicorn_flask_query", traced="client"))
    assert calls[0].attributes["url.full"] == "http://127.0.0.1:18233/users/42?expand=orders&limit=5"


def test_headers_bodies_and_trailers() -> None:
    calls, _ = run(segments("py_chunked_trailer"))
    call = calls[0]
    assert call.request_headers == (
        ("host", "127.0.0.1:18225"), ("user-agent", "curl/7.88.1"), ("accept", "*/*"),
    )  # fmt: skip
    assert call.response_headers == (
        ("server", "BaseHTTP/0.6 Python/3.11.2"), ("date", "Tue, 24 Nov 2026 23:18:06 GMT"),
        ("content-type", "text/plain"), ("transfer-encoding", "chunked"), ("trailer", "X-Checksum"),
    )  # fmt: skip
    assert call.response_body == b"first chunk;second, longer chunk of text;third"  # de-chunked
    calls, _ = run(segments("py_post_body"))
    assert (calls[0].request_body, calls[0].response_body) == (b"name=alice&x=1", b"got 14 bytes")


def test_upgrade_stops_parsing() -> None:
    calls, parser = run(segments("py_upgrade_101"), close_ts=None)
    assert parser.upgraded and len(calls) == 1
    assert parser.feed(Segment(Direction.INGRESS, b"GET / HTTP/1.1\r\n\r\n", 18, 9000)) == []


FIXTURES = [r[0] for r in RECORDED]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_byte_by_byte_gives_the_same_calls(fixture: str) -> None:
    whole, _ = run(segments(fixture))
    bytewise = [
        Segment(s.direction, s.data[i : i + 1], 1, s.ts_ns)
        for s in segments(fixture)
        for i in range(len(s.data))
    ]
    split, parser = run(bytewise)
    assert split == whole
    assert parser.stats.resyncs == 0


@pytest.mark.parametrize(
    "fixture", ["py_post_body", "py_chunked_trailer", "nginx_pipelined", "py_expect_100"]
)
def test_every_two_way_split_gives_the_same_calls(fixture: str) -> None:
    whole, _ = run(segments(fixture))
    segs = segments(fixture)
    for index, seg in enumerate(segs):
        for cut in range(1, len(seg.data)):
            parts = [
                Segment(seg.direction, seg.data[:cut], cut, seg.ts_ns),
                Segment(seg.direction, seg.data[cut:], len(seg.data) - cut, seg.ts_ns),
            ]
            calls, _ = run(segs[:index] + parts + segs[index + 1 :])
            assert calls == whole, (index, cut)


def truncated(seg: Segment, keep: int) -> Segment:
    """What the kernel hands over when it copies only ``keep`` bytes of a larger write."""
    return Segment(seg.direction, seg.data[:keep], len(seg.data), seg.ts_ns)


def test_body_larger_than_the_captured_prefix_over_many_reads() -> None:
    request, response = segments("nginx_big_body")
    head_end = response.data.index(b"\r\n\r\n") + 4
    body = response.data[head_end:]
    assert len(body) == 4053
    # nginx: writev(head), then the body in four reads of which the kernel copied 64 bytes each
    parts = [Segment(Direction.EGRESS, response.data[:head_end], head_end, 2000)]
    for i in range(4):
        piece = body[i * 1014 : (i + 1) * 1014]
        parts.append(Segment(Direction.EGRESS, piece[:64], len(piece), 3000 + i))
    calls, parser = run([request, *parts])
    assert len(calls) == 1
    assert (calls[0].end_ns, calls[0].response_size) == (3003, 4053)
    assert calls[0].attributes["http.response.body.size"] == 4053
    assert calls[0].response_body == body[:64]  # only the contiguous captured prefix, nothing invented
    assert parser.stats.truncated == 0


def test_head_and_body_in_one_truncated_write() -> None:
    request, response = segments("nginx_big_body")
    head_end = response.data.index(b"\r\n\r\n") + 4
    calls, _ = run([request, truncated(response, 300)])
    assert calls[0].attributes["http.response.body.size"] == 4053
    assert calls[0].response_body == response.data[head_end:300]


def test_cut_head_keeps_the_status_and_ends_at_the_next_request() -> None:
    segs = segments("nginx_keepalive_3")
    segs[1] = truncated(segs[1], 64)  # "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 24 Nov 2026"
    calls, parser = run(segs)
    assert [(c.end_ns, c.attributes["http.response.status_code"]) for c in calls] == [
        (2000, 200), (4000, 200), (6000, 200),
    ]  # fmt: skip
    # the cut line (Date) is left out; the body size is unknown because Content-Length was not seen
    assert calls[0].response_headers == (("server", "nginx/1.22.1"),)
    assert "http.response.body.size" not in calls[0].attributes
    assert parser.stats.truncated == 1


def test_cut_request_line_keeps_the_path_prefix() -> None:
    line = b"GET /search?q=" + b"a" * 500 + b" HTTP/1.1\r\nHost: h\r\n\r\n"
    calls, _ = run([
        Segment(Direction.INGRESS, line[:64], len(line), 1000),
        Segment(Direction.EGRESS, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, 2000),
    ])  # fmt: skip
    assert calls[0].attributes["url.path"] == "/search"
    assert calls[0].attributes["url.query"] == "q=" + "a" * 50  # 64 bytes captured
    assert "network.protocol.version" in calls[0].attributes  # from the response's status line


def test_connection_seen_mid_way_resynchronises() -> None:
    segs = segments("nginx_keepalive_3")
    # first seen: the middle of response 2's body, then request 3 and its response
    mid = Segment(Direction.EGRESS, segs[3].data[2000:], len(segs[3].data) - 2000, 4000)
    calls, parser = run([mid, segs[4], segs[5]])
    assert [(c.attributes["url.query"], c.start_ns, c.end_ns) for c in calls] == [("page=2", 5000, 6000)]
    assert (parser.stats.resyncs, parser.stats.unpaired) == (1, 0)


def test_response_without_its_request_is_counted_not_emitted() -> None:
    segs = segments("nginx_keepalive_3")
    calls, parser = run(segs[1:])  # first seen: response 1
    assert [c.attributes["url.path"] for c in calls] == ["/big.txt", "/index.html"]
    assert (parser.stats.resyncs, parser.stats.unpaired) == (0, 1)


def _cut_resp2(segs: list[Segment]) -> Segment:
    return Segment(Direction.EGRESS, segs[3].data[:1000], 1000, 4000)  # the rest of its body lost


# nginx_keepalive_3: 0 req "/", 1 its response, 2 req "/big.txt", 3 its response (4293 bytes),
# 4 req "/index.html?page=2", 5 its response. Calls of the connection are lost in the kernel
# (shed under load); the tracker calls lost() before the next captured segment.
@pytest.mark.parametrize(
    ("kept", "expected", "unpaired"),
    [
        # response 1 lost: request 1 waits; without lost() it took response 2, and every later
        # request the response of the one after it
        ([0, "lost", 2, 3, 4, 5], [("/big.txt", 4000), ("/index.html", 6000)], 1),
        ([0, 1, "lost", 3, 4, 5], [("/", 2000), ("/index.html", 6000)], 1),  # request 2 lost
        (["lost", 2, 3, 4, 5], [("/big.txt", 4000), ("/index.html", 6000)], 0),  # from the start
        ([0, 1, 2, "cut", "lost", 4, 5], [("/", 2000), ("/big.txt", 4000), ("/index.html", 6000)], 0),
        # lost between request 3 and its response: that may have been response 3 itself (and
        # this one a later request's), so request 3 is dropped too and its response is unpaired
        ([0, 1, 2, "lost", 4, "lost", 5], [("/", 2000)], 3),
    ],
)
def test_calls_lost_in_the_kernel_never_pair_a_request_with_another_response(
    kept: list, expected: list[tuple[str, int]], unpaired: int
) -> None:
    segs = segments("nginx_keepalive_3")
    parser = Http1Parser()
    calls: list[Call] = []
    for item in kept:
        if item == "lost":
            calls += parser.lost()
        else:
            calls += parser.feed(_cut_resp2(segs) if item == "cut" else segs[item])
    calls += parser.close(CLOSE_TS)
    assert [(c.attributes["url.path"], c.end_ns) for c in calls] == expected
    assert all(c.attributes["http.response.status_code"] == 200 for c in calls)
    assert parser.stats.unpaired == unpaired


def test_without_lost_a_lost_response_shifts_every_later_pair() -> None:
    """What lost() prevents: the parser alone cannot tell that response 1 is missing."""
    segs = segments("nginx_keepalive_3")
    calls, _ = run([segs[0], segs[2], segs[3], segs[4], segs[5]])
    assert [(c.attributes["url.path"], c.start_ns, c.end_ns) for c in calls] == [
        ("/", 1000, 4000), ("/big.txt", 3000, 6000), ("/index.html", 5000, CLOSE_TS),
    ]  # fmt: skip


def test_garbage_then_http() -> None:
    garbage = Segment(Direction.INGRESS, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20, 220, 500)
    calls, parser = run([garbage, *segments("nginx_get_query")])
    assert [c.attributes["url.query"] for c in calls] == ["a=1&b=two"]
    assert parser.stats.resyncs == 1


def test_garbage_response_then_next_exchange() -> None:
    segs = segments("nginx_keepalive_3")
    junk = Segment(Direction.EGRESS, b"\x00\x00\x00\x08garbage!", 12, 2000)
    calls, parser = run([segs[0], junk, segs[2], segs[3]])
    # request 1's response was garbage: it pairs with nothing; request 2 pairs FIFO and fails at close
    assert parser.stats.resyncs == 1
    assert [(c.attributes["url.path"], c.attributes.get("http.response.status_code")) for c in calls] == [
        ("/", 200), ("/big.txt", None),
    ]  # fmt: skip


def test_request_without_response_at_close() -> None:
    req = segments("nginx_get_query", traced="client")[0]
    calls, parser = run([req], close_ts=5000)
    assert [(c.role, c.start_ns, c.end_ns, c.error_type) for c in calls] == [
        (Role.CLIENT, 1000, 5000, "closed_without_response"),
    ]  # fmt: skip
    assert "http.response.status_code" not in calls[0].attributes
    assert parser.stats.unpaired == 1


CUT = "connection closed before the response ended"


@pytest.mark.parametrize(
    ("fixture", "keep", "traced", "expected"),
    [
        # nginx's Content-Length: 4053 body, 1000 bytes of the write sent, then the close (a client
        # that stopped reading: curl | head, a browser tab closed): status kept, the call failed
        ("nginx_big_body", 1, "server", [(2000, 200, 1000 - 240, "connection_closed", CUT)]),
        ("nginx_big_body", 1, "client", [(2000, 200, 1000 - 240, "connection_closed", CUT)]),
        # http.server's chunked answer closed after its third chunk: no terminating 0 chunk
        ("py_chunked_trailer", 3, "server", [(4000, 200, 46, "connection_closed", CUT)]),
        # the terminating chunk came: the close after it is the usual one
        ("py_chunked_trailer", 4, "server", [(5000, 200, 46, None, "")]),
        # no framing: the body runs until the close, which is its end, not a failure
        ("py_close_delimited", 9, "client", [(2000, 200, 24, None, "")]),
        # a 5xx cut short stays the status's error
        ("py_500", 9, "server", [(2000, 500, 15, "500", "")]),
    ],
)
def test_close_mid_body(fixture: str, keep: int, traced: str, expected: list) -> None:
    """A response whose framed body had not ended at the close is a failed call (as the HTTP/2
    parser says of a stream open at close); its status line is kept."""
    segs = segments(fixture, traced=traced)
    request, responses = segs[0], segs[1:]
    if fixture == "nginx_big_body":  # one 4293-byte write: keep its first 1000 bytes
        responses = [Segment(responses[0].direction, responses[0].data[:1000], 1000, 2000)]
    calls, parser = run([request, *responses[:keep]], close_ts=7000)
    assert [
        (c.end_ns, c.attributes["http.response.status_code"], c.attributes["http.response.body.size"],
         c.error_type, c.status_message)
        for c in calls
    ] == expected  # fmt: skip
    cut = [e for e in expected if e[3] == "connection_closed"]
    assert parser.stats.truncated == len(cut)


def test_unknown_method_traceparent_and_tracestate() -> None:
    request = (
        b"PROPFIND /dav/ HTTP/1.1\r\nHost: [::1]:8080\r\n"
        b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
        b"tracestate: congo=t61rcWkgMzE\r\nContent-Length: 0\r\n\r\n"
    )
    calls, _ = run([
        Segment(Direction.EGRESS, request, len(request), 10),
        Segment(Direction.INGRESS, b"HTTP/1.1 207 Multi-Status\r\nContent-Length: 2\r\n\r\nok", 48, 20),
    ])  # fmt: skip
    call = calls[0]
    assert call.name == "HTTP"  # the conventions' name when the method is not a known one
    assert call.attributes["http.request.method"] == "_OTHER"
    assert call.attributes["http.request.method_original"] == "PROPFIND"
    assert (call.attributes["server.address"], call.attributes["server.port"]) == ("::1", 8080)
    assert call.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert call.tracestate == "congo=t61rcWkgMzE"
    assert (call.role, call.end_ns) == (Role.CLIENT, 20)


def test_connect_tunnel_stops_parsing() -> None:
    req = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    calls, parser = run([
        Segment(Direction.EGRESS, req, len(req), 10),
        Segment(Direction.EGRESS, b"\x16\x03\x01\x00\xa5", 5, 15),  # TLS sent before the answer
        Segment(Direction.INGRESS, b"HTTP/1.1 200 Connection established\r\n\r\n", 39, 20),
        Segment(Direction.INGRESS, b"\x16\x03\x03\x00\x7a", 5, 30),
    ])  # fmt: skip
    assert parser.upgraded and parser.stats.resyncs == 0
    assert [(c.name, c.attributes.get("url.path"), c.attributes["server.port"]) for c in calls] == [
        ("CONNECT", None, 443),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1\r\n", True),
        (b"POST /x HTTP/1.1\r\n", True),
        (b"DELETE /x", True),
        (b"PATCH /x", True),
        (b"OPTIONS * HTTP/1.1", True),
        (b"HTTP/1.1 200 OK\r\n", True),
        (b"HTTP/1.0 404", True),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),  # the HTTP/2 preface is not HTTP/1
        (b"GETX / HTTP/1.1", False),
        (b"*3\r\n$3\r\nSET\r\n", False),  # Redis
        (b"\x00\x00\x00\x08\x04\xd2\x16/", False),  # PostgreSQL SSLRequest
        (b"get / http/1.1", False),  # methods are case-sensitive
        (b"", False),
    ],
)
def test_looks_like(data: bytes, expected: bool) -> None:
    assert looks_like(data, Direction.EGRESS) is expected
    assert SPEC.looks_like is looks_like and SPEC.name == "http" and SPEC.probe == "http"


def test_recorded_fixtures_are_all_covered() -> None:
    from tests.fixtures.http1.load import HERE

    assert sorted(p.stem for p in HERE.glob("*.json")) == sorted(FIXTURES)
    assert all(chunks(f) for f in FIXTURES)


def test_a_repeated_head_parses_from_the_memo_with_its_own_times() -> None:
    """Whole heads and header lines are remembered: the same exchange twice on one connection gives
    the same Calls, each with its own timestamps; a head seen cut is never remembered as whole."""
    req = b"GET /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:19310\r\nX-Memo-Test: 1\r\n\r\n"  # wrk-like request
    resp = b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Length: 3\r\n\r\nno\n"
    p = Http1Parser()
    out = []
    for i, ts in enumerate((100, 300)):
        out += p.feed(Segment(Direction.INGRESS, req, len(req), ts))
        out += p.feed(Segment(Direction.EGRESS, resp, len(resp), ts + 50 + i))
    assert [(c.start_ns, c.end_ns) for c in out] == [(100, 150), (300, 351)]
    first, second = out
    assert first.attributes == second.attributes
    assert first.attributes["http.response.status_code"] == 404
    assert first.attributes["url.query"] == "x=1" and first.attributes["server.port"] == 19310
    assert first.request_headers == second.request_headers == (("host", "127.0.0.1:19310"), ("x-memo-test", "1"))
    assert first.response_headers == (("server", "nginx"), ("content-length", "3"))
    assert first.response_body == second.response_body == b"no\n"
    # The same request head, cut by the capture limit: its last (incomplete) line is left out.
    p = Http1Parser()
    assert p.feed(Segment(Direction.INGRESS, req[:46], len(req), 500)) == []  # ends in "X-Memo"
    (cut,) = p.feed(Segment(Direction.EGRESS, resp, len(resp), 600))
    assert cut.request_headers == (("host", "127.0.0.1:19310"),)
    assert p.stats.truncated == 1


def test_server_address_is_one_object_per_host_for_every_parser_and_role() -> None:
    # The stages after the parser compare values by identity first (Redactor.is_clean, the
    # encoder's memo): the client's and the server's spans of one exchange, and every connection,
    # hand on the same address object for the same Host.
    request = b"GET /a HTTP/1.1\r\nHost: 10.1.2.3:8080\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    addresses = []
    for role, req_dir, resp_dir in ((Role.SERVER, Direction.INGRESS, Direction.EGRESS),
                                    (Role.CLIENT, Direction.EGRESS, Direction.INGRESS),
                                    (Role.SERVER, Direction.INGRESS, Direction.EGRESS)):
        parser = Http1Parser()
        calls = parser.feed(Segment(req_dir, request, len(request), 1)) + parser.feed(
            Segment(resp_dir, response, len(response), 2))
        assert [(c.role, c.attributes["server.port"]) for c in calls] == [(role, 8080)]
        addresses.append(calls[0].attributes["server.address"])
    assert addresses == ["10.1.2.3"] * 3
    assert addresses[0] is addresses[1] is addresses[2]
