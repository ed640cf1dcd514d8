"""Http2Parser over bytes recorded from real grpcio and curl->nginx traffic (tests/fixtures/http2,
recorded by tests/support/grpc_demo/record.py through tests/support/h2_recorder.py).

Each recording is replayed from both sides: "client" (c2s bytes are EGRESS) and "server".
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import hpack
import pytest
from hpack.huffman_table import decode_huffman

from hostagent.model import Call, Direction, Role, Segment
from hostagent.protocols import http2
from hostagent.protocols.http2 import Http2Parser, looks_like
from hostagent.protocols.http2_frames import DATA, GOAWAY, HEADERS, PREFACE, SETTINGS, parse_header
from hostagent.protocols.http2_streams import SIZE_UNKNOWN
from hostagent.settings import CaptureSettings
from hostagent.traces.wire import with_wire_detail
from tests.support.h2_recorder import Chunk, in_16k_frames, load_chunks, segments

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "http2"
METHOD = "hostagent.demo.v1.Demo/"
CLIENT_HEADERS = (
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-accept-encoding", "identity, deflate, gzip"),
    ("user-agent", "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)"),
)


def chunks(name: str) -> list[Chunk]:
    return load_chunks(FIXTURES / f"{name}.json")


def replay(segs: list[Segment], parser: Http2Parser | None = None) -> tuple[list[Call], Http2Parser]:
    parser = parser or Http2Parser()
    calls: list[Call] = []
    for seg in segs:
        calls += parser.feed(seg)
    calls += parser.close(10**15)
    return calls, parser


def summary(call: Call) -> tuple[Any, ...]:
    a = call.attributes
    return (
        call.protocol,
        call.role,
        call.name,
        a.get("rpc.method"),
        a.get("rpc.response.status_code"),
        call.error_type,
        call.status_message,
        a.get("hostagent.rpc.request.message_count"),
        a.get("hostagent.rpc.response.message_count"),
        call.request_size,
        call.response_size,
    )


# (name, status, client error, server error, message, request msgs, response msgs, req bytes, resp bytes)
SHAPES = [
    # Unary "hello": 5-byte prefix + 7-byte EchoRequest; reply 5 + 9 (text + seq=1)
    ("Unary", "OK", None, None, "", 1, 1, 12, 14),
    # ServerStream count=3: three 10-byte replies
    ("ServerStream", "OK", None, None, "", 1, 3, 10, 30),
    # ClientStream "a","b","c": three 8-byte requests, one reply "a+b+c", seq=3
    ("ClientStream", "OK", None, None, "", 3, 1, 24, 14),
    ("Bidi", "OK", None, None, "", 2, 2, 16, 20),
    # Fail(UNAVAILABLE=14): trailers-only response; an error on both sides (v1.44)
    ("Fail", "UNAVAILABLE", "UNAVAILABLE", "UNAVAILABLE", "failing on purpose: boom", 1, 0, 13, 0),
    # Fail(NOT_FOUND=5): an error for the client only
    ("Fail", "NOT_FOUND", "NOT_FOUND", None, "failing on purpose: boom", 1, 0, 13, 0),
]


@pytest.mark.parametrize("view", ["client", "server"])
def test_grpc_call_shapes(view: str) -> None:
    (segs,) = segments(chunks("grpc_shapes"), view).values()
    calls, parser = replay(segs)
    role = Role.CLIENT if view == "client" else Role.SERVER
    expected = [
        (
            "grpc", role, METHOD + m, METHOD + m, status,
            client_err if role == Role.CLIENT else server_err,
            msg if (client_err if role == Role.CLIENT else server_err) else "",
            nreq, nresp, req, resp,
        )
        for m, status, client_err, server_err, msg, nreq, nresp, req, resp in SHAPES
    ]  # fmt: skip
    assert [summary(c) for c in calls] == expected
    assert parser.stats.extra == {} and parser.stats.unpaired == 0 and parser.stats.resyncs == 0


def test_grpc_attributes_headers_and_timestamps() -> None:
    ch = chunks("grpc_shapes")
    (segs,) = segments(ch, "client").values()
    calls, _ = replay(segs)
    unary = calls[0]
    assert unary.attributes == {
        "rpc.system.name": "grpc",
        "rpc.method": "hostagent.demo.v1.Demo/Unary",
        "rpc.response.status_code": "OK",
        "server.address": "127.0.0.1",  # from :authority 127.0.0.1:18601 (the relay)
        "server.port": 18601,
        "network.protocol.name": "http",
        "network.protocol.version": "2",
        "hostagent.rpc.request.message_count": 1,
        "hostagent.rpc.response.message_count": 1,
    }
    assert unary.request_headers == CLIENT_HEADERS
    assert unary.response_headers == (
        ("content-type", "application/grpc"),
        ("grpc-accept-encoding", "identity, deflate, gzip"),
        ("grpc-status", "0"),  # trailers follow the response headers
        ("grpc-message", ""),
    )
    # Chunk 2 (c2s) carries the request HEADERS; chunk 5 (s2c) carries the trailers.
    assert (unary.start_ns, unary.end_ns) == (ch[2].ts, ch[5].ts)
    assert unary.request_body == bytes.fromhex("00000000070a0568656c6c6f")  # prefix, len 7, "hello"
    # Later calls reuse HPACK dynamic-table entries for every header but :path: still decoded.
    assert all(c.request_headers == CLIENT_HEADERS for c in calls)


def test_twenty_concurrent_calls_on_one_connection() -> None:
    for view, role in (("client", Role.CLIENT), ("server", Role.SERVER)):
        (segs,) = segments(chunks("grpc_concurrent"), view).values()
        calls, parser = replay(segs)
        assert len(calls) == 20
        assert {summary(c)[:9] for c in calls} == {
            ("grpc", role, METHOD + "Unary", METHOD + "Unary", "OK", None, "", 1, 1)
        }
        # "c0".."c9": 5-byte prefix + 4-byte message, reply 11; "c10".."c19": 10 and 12.
        sizes = sorted((c.request_size, c.response_size) for c in calls)
        assert sizes == [(9, 11)] * 10 + [(10, 12)] * 10
        texts = sorted(c.request_body[7:].decode() for c in calls)
        assert texts == sorted(f"c{i}" for i in range(20))
        assert parser.stats.extra == {}


def test_each_call_names_its_stream_the_same_at_both_ends() -> None:
    """Concurrent calls on one connection are told apart by stream id (traces.linking): grpcio
    opens the channel's streams 1, 3, 5... (not in the order of the futures)."""
    streams = {}
    for view in ("client", "server"):
        (segs,) = segments(chunks("grpc_concurrent"), view).values()
        calls, _ = replay(segs)
        streams[view] = {c.request_body[7:].decode(): c.stream_id for c in calls}
    assert streams["client"] == streams["server"]
    assert sorted(streams["client"].values()) == list(range(1, 40, 2))


def test_client_cancel_is_rst_stream_cancel() -> None:
    ch = chunks("grpc_cancel")
    (client_segs,) = segments(ch, "client").values()
    (server_segs,) = segments(ch, "server").values()
    (client,), _ = replay(client_segs)
    (server,), _ = replay(server_segs)
    # Client: the stream was reset (RST_STREAM CANCEL) before any grpc-status: error.type is the
    # HTTP/2 code, the status the one gRPC derives from it.
    assert summary(client) == (
        "grpc", Role.CLIENT, METHOD + "Bidi", METHOD + "Bidi", "CANCELLED", "CANCEL", "RST_STREAM CANCEL",
        1, 1, 12, 14,
    )  # fmt: skip
    # Server: CANCELLED is not among v1.44's server-side errors.
    assert summary(server)[:7] == (
        "grpc",
        Role.SERVER,
        METHOD + "Bidi",
        METHOD + "Bidi",
        "CANCELLED",
        None,
        "",
    )
    assert client.end_ns == ch[9].ts  # the RST_STREAM's chunk


DEADLINE_MESSAGE = "deadline exceeded (grpc-timeout 100m): RST_STREAM CANCEL"


@pytest.mark.parametrize(
    ("view", "reset_after_ms", "status", "error_type", "message"),
    [
        # as recorded: 101 ms after the request
        ("client", None, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", DEADLINE_MESSAGE),
        ("server", None, "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", DEADLINE_MESSAGE),
        # the same reset 50 ms after the request, inside its 100 ms: the application cancelled
        ("client", 50, "CANCELLED", "CANCEL", "RST_STREAM CANCEL"),
    ],
)
def test_a_reset_once_the_deadline_passed_is_deadline_exceeded(
    view: str, reset_after_ms: int | None, status: str, error_type: str, message: str
) -> None:
    """grpcio, timeout=0.1 against a server that waits 500 ms: the request carries
    ``grpc-timeout: 100m``; 101 ms later the client resets the stream with CANCEL, no status on the
    wire, and its application sees DEADLINE_EXCEEDED (an error on the server side too, v1.44)."""
    ch = chunks("grpc_deadline")
    assert bytes.fromhex("00000403000000000100000008") in ch[6].data  # RST_STREAM stream 1 CANCEL
    if reset_after_ms is not None:
        ch = [*ch[:6], replace(ch[6], ts=ch[3].ts + reset_after_ms * 1_000_000)]
    (segs,) = segments(ch, view).values()
    (call,), parser = replay(segs)
    role = Role.CLIENT if view == "client" else Role.SERVER
    # no reply came: 1 request message of 14 bytes, no response
    assert summary(call) == ("grpc", role, METHOD + "Unary", METHOD + "Unary", status, error_type, message,
                             1, None, 14, 0)
    assert ("grpc-timeout", "100m") in call.request_headers
    assert call.end_ns == ch[6].ts  # the RST_STREAM's chunk
    assert parser.stats.extra == {}


# grpcio sent b"\xff\xfe\x80\x00abc" (not UTF-8, a NUL inside) as metadata "echo-bin"; the server
# returned it as "grpc-status-details-bin". Unpadded base64, as PROTOCOL-HTTP2.md has it sent.
BINARY_B64 = "//6AAGFiYw"
# The HPACK string literals on the wire, after the field name (length byte first).
TRUE_BINARY = b"\x08" + b"\x00\xff\xfe\x80\x00abc"  # 8 bytes, plain: NUL + the raw bytes
HUFFMAN_B64 = b"\x88" + bytes.fromhex("618721871613 73f1")  # 8 bytes, Huffman-coded "//6AAGFiYw"


@pytest.mark.parametrize(
    ("name", "view", "request_wire", "response_wire"),
    [
        # both peers allow true binary (SETTINGS 0xFE03): each sends NUL + the raw bytes
        ("grpc_binary_metadata", "client", TRUE_BINARY, TRUE_BINARY),
        ("grpc_binary_metadata", "server", TRUE_BINARY, TRUE_BINARY),
        # the client does not allow it: the server sends base64; the client still sends binary
        ("grpc_binary_metadata_base64", "client", TRUE_BINARY, HUFFMAN_B64),
        ("grpc_binary_metadata_base64", "server", TRUE_BINARY, HUFFMAN_B64),
    ],
)
def test_binary_metadata_is_base64_text_however_it_travelled(
    name: str, view: str, request_wire: bytes, response_wire: bytes
) -> None:
    assert decode_huffman(HUFFMAN_B64[1:]) == BINARY_B64.encode()
    ch = chunks(name)
    c2s = b"".join(c.data for c in ch if c.dir == "c2s")
    s2c = b"".join(c.data for c in ch if c.dir == "s2c")
    assert b"echo-bin" + request_wire in c2s
    assert b"grpc-status-details-bin" + response_wire in s2c
    (segs,) = segments(ch, view).values()
    (call,), parser = replay(segs)
    assert ("echo-bin", BINARY_B64) in call.request_headers
    assert ("grpc-status-details-bin", BINARY_B64) in call.response_headers
    assert call.attributes["rpc.response.status_code"] == "NOT_FOUND"
    assert parser.stats.extra == {}



CURL_EXPECTED = [
    ("/index.html", "lang=en", 200, None, 19),
    ("/missing", None, 404, "404", 153),  # nginx's 404 page; an error for the client
    ("/hello", None, 200, None, 6),
]


@pytest.mark.parametrize(("conn", "expected"), list(enumerate(CURL_EXPECTED)))
def test_curl_prior_knowledge_against_nginx(conn: int, expected: tuple[Any, ...]) -> None:
    path, query, status, client_error, body = expected
    for view in ("client", "server"):
        calls, parser = replay(segments(chunks("curl_nginx"), view)[conn])
        (call,) = calls
        attrs = {
            "http.request.method": "GET",
            "url.path": path,
            "url.scheme": "http",
            "http.response.status_code": status,
            "network.protocol.name": "http",
            "network.protocol.version": "2",
            "user_agent.original": "curl/7.88.1",
            "server.address": "127.0.0.1",
            "server.port": 18611,
        }
        if query is not None:
            attrs["url.query"] = query
        assert call.protocol == "http2" and call.name == "GET"
        assert call.attributes == attrs
        assert call.role == (Role.CLIENT if view == "client" else Role.SERVER)
        assert call.error_type == (client_error if view == "client" else None)  # 4xx: not a server error
        assert call.traceparent == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        assert (call.request_size, call.response_size) == (0, body)
        assert dict(call.response_headers)["server"] == "nginx/1.22.1"
        assert parser.stats.extra == {}


def split_bytewise(segs: list[Segment]) -> list[Segment]:
    return [replace(s, data=s.data[i : i + 1], size=1) for s in segs for i in range(len(s.data))]


@pytest.mark.parametrize("name", ["grpc_shapes", "grpc_concurrent", "curl_nginx", "grpc_cancel",
                                  "grpc_deadline", "grpc_binary_metadata", "grpc_binary_metadata_base64"])
def test_same_calls_when_every_byte_is_its_own_segment(name: str) -> None:
    for conn_segs in segments(chunks(name), "client").values():
        whole, _ = replay(conn_segs)
        bytewise, parser = replay(split_bytewise(conn_segs))
        assert [summary(c) for c in bytewise] == [summary(c) for c in whole]
        assert parser.stats.extra == {}


def test_first_seen_mid_way_degrades_honestly() -> None:
    """Start watching after the Unary call (chunk 6 onwards): the dynamic tables hold entries
    made before. What decodes is right; what cannot be known is left out and counted."""
    (segs,) = segments(chunks("grpc_shapes"), "client").values()
    full, _ = replay(segs)
    assert looks_like(segs[6].data, segs[6].direction)  # a plausible frame header, mid-way
    partial, parser = replay(segs[6:])
    assert parser.stats.extra["midstream"] == 2  # both directions
    assert parser.stats.extra["hpack_unknown_table"] >= 1
    assert len(partial) == len(full) - 1
    for got, want in zip(partial, full[1:]):
        assert_consistent(got, want)
        assert got.attributes["hostagent.http2.headers_incomplete"] is True
    # ServerStream's :path is a new literal (known) but content-type and grpc-status reference
    # entries made before we watched: its trailers' grpc-message (a literal) says gRPC, so it is
    # the gRPC call it is, its status left out (it was reported as an HTTP/2 POST 200).
    assert (partial[0].protocol, partial[0].name) == ("grpc", METHOD + "ServerStream")
    assert partial[0].attributes["rpc.method"] == METHOD + "ServerStream"
    assert "rpc.response.status_code" not in partial[0].attributes


def assert_consistent(got: Call, want: Call) -> None:
    """``got`` (decoded from less) says nothing that ``want`` (decoded from everything) denies."""
    assert (got.start_ns, got.role) == (want.start_ns, want.role)
    assert set(got.request_headers) <= set(want.request_headers)
    assert set(got.response_headers) <= set(want.response_headers)
    assert got.request_size <= want.request_size and got.response_size <= want.response_size
    assert got.error_type in (None, want.error_type), (got.error_type, got.status_message)  # none made up
    attrs = dict(got.attributes)
    attrs.pop("hostagent.http2.headers_incomplete", None)
    attrs.pop("hostagent.http2.end_unseen", None)  # what less bytes say of themselves
    if got.protocol == want.protocol:
        for key, value in attrs.items():
            if not key.endswith("message_count"):  # a count may be unknowable, never wrong
                assert want.attributes.get(key) == value, (key, value)
            elif value is not None:
                assert want.attributes.get(key) == value, (key, value)
        return
    # A gRPC call whose content-type could not be decoded: what is said must be true of it.
    assert (got.protocol, want.protocol) == ("http2", "grpc")
    for key, value in attrs.items():
        assert {
            "http.request.method": "POST",
            "url.path": "/" + str(want.attributes["rpc.method"]),
            "url.scheme": "http",
            "http.response.status_code": 200,
        }.get(key, want.attributes.get(key)) == value, (key, value)


@pytest.mark.parametrize("keep", [16, 40, 64, 100, 200])
def test_truncated_captures_never_give_wrong_values(keep: int) -> None:
    """Only the first ``keep`` bytes of every Segment were captured (size says what moved)."""
    for name in ("grpc_shapes", "grpc_concurrent", "curl_nginx"):
        for conn_segs in segments(chunks(name), "client").values():
            full = {c.start_ns: c for c in replay(conn_segs)[0]}
            cut = [replace(s, data=s.data[:keep]) for s in conn_segs]
            calls, parser = replay(cut)
            for got in calls:
                assert_consistent(got, full[got.start_ns])
            if any(len(s.data) > keep for s in conn_segs):
                assert parser.stats.truncated > 0


def consistent(got: Call, want: Call) -> bool:
    try:
        assert_consistent(got, want)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("name", ["grpc_shapes", "grpc_concurrent", "curl_nginx"])
def test_a_lost_segment_never_gives_wrong_values(name: str) -> None:
    """Calls lost in the kernel (shed under load): whichever single Segment is lost, with
    ``lost()`` before the next one, what is decoded says nothing the full decoding denies -- the
    HPACK table is partly known from there on, so a reference to an entry inserted in the lost
    bytes drops that field instead of naming another entry's value."""
    checked = dropped = 0
    for conn_segs in segments(chunks(name), "client").values():
        full: dict[int, list[Call]] = {}
        for c in replay(conn_segs)[0]:
            full.setdefault(c.start_ns, []).append(c)  # concurrent streams may start in one Segment
        for lost_at in range(1, len(conn_segs) - 1):
            parser = Http2Parser()
            calls: list[Call] = []
            for i, seg in enumerate(conn_segs):
                if i == lost_at:
                    continue
                if i == lost_at + 1:
                    calls += parser.lost()
                calls += parser.feed(seg)
            calls += parser.close(10**15)
            for got in calls:
                if got.start_ns in full:  # a call whose start was lost starts later: no counterpart
                    assert any(consistent(got, want) for want in full[got.start_ns]), (lost_at, got)
                    checked += 1
            assert parser.stats.extra["calls_lost"] == 1
            dropped += parser.stats.unpaired  # in flight at the loss and never ended: not reported
    assert checked > 0 or name == "curl_nginx"  # one call per connection there: each loss drops it
    assert dropped > 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PREFACE + bytes.fromhex("000024040000000000"), True),  # grpcio client's first bytes
        (b"PRI * HT", True),  # the preface split by the capture
        (bytes.fromhex("000018040000000000000400400000"), True),  # grpcio server's SETTINGS first
        (bytes.fromhex("0000da010400000001") + b"@\x05:path", True),  # mid-way HEADERS
        (b"PRI", False),  # too short to tell
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (bytes.fromhex("0000000804d2162f"), False),  # PostgreSQL SSLRequest
        (bytes.fromhex("4a0000000a382e302e"), False),  # MySQL server greeting
        (b"*1\r\n$4\r\nPING\r\n", False),  # Redis
        # a plausible first header followed by an implausible second one
        (bytes.fromhex("000000040100000000") + b"GET / HTTP/1.1", False),
    ],
)
def test_looks_like(data: bytes, expected: bool) -> None:
    assert looks_like(data, Direction.EGRESS) is expected
    assert looks_like(data, Direction.INGRESS) is expected


def test_spec() -> None:
    assert (http2.SPEC.name, http2.SPEC.probe, http2.SPEC.transports) == ("http2", "http2", ("tcp",))
    assert isinstance(http2.SPEC.new_parser(), Http2Parser)


# --- behaviour no recording here shows: frames built with hpack's Encoder (marked synthetic) ---


def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def seg(direction: Direction, data: bytes, ts: int) -> Segment:
    return Segment(direction, data, len(data), ts)


def test_synthetic_goaway_refuses_streams_above_last_stream_id() -> None:
    enc = hpack.Encoder()
    out, inn = Direction.EGRESS, Direction.INGRESS
    p = Http2Parser()
    p.feed(seg(out, PREFACE + frame(SETTINGS, 0, 0, b""), 1))
    for sid in (1, 3, 5):
        block = enc.encode([(":method", "GET"), (":path", f"/s{sid}"), (":scheme", "http"), (":authority", "h")])
        p.feed(seg(out, frame(HEADERS, 0x5, sid, block), 10 + sid))
    calls = p.feed(seg(inn, frame(SETTINGS, 0, 0, b"") + frame(GOAWAY, 0, 0, (3).to_bytes(4, "big") + bytes(4)), 20))
    assert [(c.attributes["url.path"], c.error_type, c.status_message) for c in calls] == [
        ("/s5", "REFUSED_STREAM", "GOAWAY last_stream_id=3 NO_ERROR")
    ]
    calls = p.close(30)  # streams 1 and 3 were never answered
    assert [(c.attributes["url.path"], c.error_type, c.end_ns) for c in calls] == [
        ("/s1", "connection_closed", 30),
        ("/s3", "connection_closed", 30),
    ]


def test_synthetic_padding_priority_and_continuation() -> None:
    enc = hpack.Encoder()
    block = enc.encode([(":method", "POST"), (":path", "/p"), (":scheme", "http"), ("x-long", "v" * 40)])
    head, tail = block[:10], block[10:]
    padded = bytes([3]) + bytes(5) + head + b"\x00\x00\x00"  # pad length 3, priority (5 bytes), padding
    req = frame(HEADERS, 0x8 | 0x20, 1, padded) + frame(0x9, 0x4, 1, tail)  # HEADERS then CONTINUATION
    req += frame(DATA, 0x8 | 0x1, 1, bytes([2]) + b"body" + b"\x00\x00")  # padded DATA: 4 body bytes
    resp = frame(HEADERS, 0x5, 1, hpack.Encoder().encode([(":status", "503")]))
    p = Http2Parser()
    assert p.feed(seg(Direction.INGRESS, PREFACE + frame(SETTINGS, 0, 0, b"") + req, 1)) == []
    (call,) = p.feed(seg(Direction.EGRESS, frame(SETTINGS, 0, 0, b"") + resp, 2))
    assert call.role == Role.SERVER
    assert (call.name, call.attributes["url.path"], call.error_type) == ("POST", "/p", "503")
    assert dict(call.request_headers)["x-long"] == "v" * 40
    assert (call.request_size, call.request_body) == (4, b"body")


def test_synthetic_after_h2c_upgrade() -> None:
    """RFC 7540 3.2: the HTTP/1.1 request that asked for h2c is stream 1; the answer is frames."""
    p = Http2Parser.after_upgrade(
        method="GET",
        target="/up?x=1",
        headers=[("Host", "localhost:8080"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                 ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"), ("User-Agent", "curl/7.88.1")],
        request_direction=Direction.EGRESS,
        start_ns=5,
    )  # fmt: skip
    assert p.feed(seg(Direction.EGRESS, PREFACE + frame(SETTINGS, 0, 0, b""), 6)) == []
    resp = hpack.Encoder().encode([(":status", "200"), ("content-type", "text/plain")])
    assert p.feed(seg(Direction.INGRESS, frame(SETTINGS, 0, 0, b"") + frame(HEADERS, 0x4, 1, resp), 7)) == []
    (call,) = p.feed(seg(Direction.INGRESS, frame(DATA, 0x1, 1, b"hi"), 9))
    assert (call.role, call.name, call.start_ns, call.end_ns) == (Role.CLIENT, "GET", 5, 9)
    assert call.attributes["url.path"] == "/up" and call.attributes["url.query"] == "x=1"
    assert call.attributes["server.address"] == "localhost" and call.attributes["server.port"] == 8080
    assert call.attributes["http.response.status_code"] == 200
    assert call.request_headers == (("user-agent", "curl/7.88.1"),)
    assert (call.response_size, call.response_body) == (2, b"hi")


def test_synthetic_hpack_garbage_is_counted_not_raised() -> None:
    p = Http2Parser()
    p.feed(seg(Direction.EGRESS, PREFACE + frame(SETTINGS, 0, 0, b""), 1))
    p.feed(seg(Direction.EGRESS, frame(HEADERS, 0x5, 1, b"\xff\xff\xff\xff\x7f"), 2))  # index overflow
    assert p.stats.extra["hpack_errors"] == 1
    good = hpack.Encoder().encode([(":method", "GET"), (":path", "/after")])
    p.feed(seg(Direction.EGRESS, frame(HEADERS, 0x5, 3, good), 3))
    lost, after = p.close(4)
    # The undecodable request is still a request: reported, flagged, with nothing invented.
    assert lost.attributes == {
        "network.protocol.name": "http",
        "network.protocol.version": "2",
        "hostagent.http2.headers_incomplete": True,
    }
    assert after.attributes["url.path"] == "/after"  # literals still decode after the table is lost


@pytest.mark.parametrize("name", ["grpc_shapes", "grpc_concurrent", "curl_nginx", "grpc_cancel",
                                  "grpc_deadline", "grpc_binary_metadata", "grpc_binary_metadata_base64"])
def test_reference_hpack_gives_the_same_calls(name: str) -> None:
    for conn_segs in segments(chunks(name), "server").values():
        ours, _ = replay(conn_segs)
        ref, _ = replay(conn_segs, Http2Parser(reference_hpack=True))
        assert ours == ref


def _grpc_exchange(enc_out: hpack.Encoder, enc_in: hpack.Encoder, sid: int, request: bytes, reply: bytes,
                   ) -> tuple[bytes, bytes]:
    """grpcio's write shapes (strace of grpcio 1.x on loopback): the client writes HEADERS,
    WINDOW_UPDATE, DATA(END_STREAM), WINDOW_UPDATE(0) in one sendmsg; the server HEADERS and DATA
    and the trailers (END_STREAM) after them."""
    head = enc_out.encode([(":method", "POST"), (":scheme", "http"), (":path", "/acc.v1.Shop/Get"),
                           (":authority", "127.0.0.1:1"), ("content-type", "application/grpc"), ("te", "trailers")])
    win = (1000).to_bytes(4, "big")
    out = (frame(HEADERS, 0x4, sid, head) + frame(0x8, 0, sid, win)
           + frame(DATA, 0x1, sid, b"\x00" + len(request).to_bytes(4, "big") + request) + frame(0x8, 0, 0, win))
    resp = enc_in.encode([(":status", "200"), ("content-type", "application/grpc")])
    trailers = enc_in.encode([("grpc-status", "0")])
    back = (frame(HEADERS, 0x4, sid, resp) + frame(DATA, 0, sid, b"\x00" + len(reply).to_bytes(4, "big") + reply)
            + frame(HEADERS, 0x5, sid, trailers))
    return out, back


def test_a_big_grpc_message_cut_by_the_capture_keeps_its_own_call_and_reports_a_cut_reply() -> None:
    """Messages bigger than the captured prefix (payload_bytes, 4096): the frames before the cut
    decode with the HPACK table as it was (the big request's own :path and content-type), and a
    reply whose trailers were cut is reported at close with what was seen (status 200, no gRPC
    status, no error made up), ending at its last frame seen, instead of vanishing."""
    enc_out, enc_in = hpack.Encoder(), hpack.Encoder()
    out, inn = Direction.EGRESS, Direction.INGRESS
    p = Http2Parser()
    calls = p.feed(seg(out, PREFACE + frame(SETTINGS, 0, 0, b""), 1))
    calls += p.feed(seg(inn, frame(SETTINGS, 0, 0, b""), 2))

    def exchange(sid: int, request: bytes, reply: bytes, t: int, keep: int = 4096) -> list[Call]:
        req, resp = _grpc_exchange(enc_out, enc_in, sid, request, reply)
        got = p.feed(Segment(out, req[:keep], len(req), t))
        return got + p.feed(Segment(inn, resp[:keep], len(resp), t + 5))

    calls += exchange(1, b"small", b"pong", 10)
    big_request = exchange(3, b"Q" * 4200, b"pong", 20)  # the WINDOW_UPDATE after its DATA is cut
    calls += big_request
    calls += exchange(5, b"big", b"R" * 100_000, 30)  # the trailers are cut
    calls += p.close(99)
    by_start = {c.start_ns: c for c in calls}
    assert sorted(by_start) == [10, 20, 30]
    for start in (10, 20):
        assert by_start[start].attributes["rpc.method"] == "acc.v1.Shop/Get", start
        assert "hostagent.http2.headers_incomplete" not in by_start[start].attributes, start
    assert [c.start_ns for c in big_request] == [20]
    # What the cut tail of the big request may have held is unknown (here a WINDOW_UPDATE; it
    # could have been HEADERS adding to the table): the client's later blocks decode partially,
    # never with a guessed entry.
    assert by_start[30].attributes["hostagent.http2.headers_incomplete"] is True
    assert "rpc.method" not in by_start[30].attributes
    assert by_start[20].attributes["rpc.response.status_code"] == "OK"
    cut = by_start[30]
    assert cut.attributes["hostagent.http2.end_unseen"] is True
    assert "rpc.response.status_code" not in cut.attributes and cut.error_type is None
    assert (cut.end_ns, cut.response_size) == (35, SIZE_UNKNOWN)  # unknowable: not reported
    assert "hostagent.http2.end_unseen" not in by_start[10].attributes


def captured(seg: Segment, head: int = 4096, tail: int = 512) -> Segment:
    """The Segment as the kernel hands it on: its head, and its last bytes when it is bigger."""
    if len(seg.data) <= head:
        return seg
    data = seg.data
    return replace(seg, data=data[:head], tail=data[max(head, len(data) - tail) :])


@pytest.mark.parametrize("view", ["client", "server"])
def test_a_big_grpc_message_keeps_the_channels_hpack_tables(view: str) -> None:
    """grpcio writes a 20 KB message as one DATA frame in one sendmsg, the reply's trailers after
    it (tests/fixtures/http2/grpc_big.json). The capture keeps 4096 bytes and the write's last 512:
    the big call ends with its own trailers, and the next call on the channel decodes whole."""
    (conn,) = segments(chunks("grpc_big"), view).values()
    calls, parser = replay([captured(s) for s in conn])
    unary = "hostagent.demo.v1.Demo/Unary"
    assert [summary(c)[3:9] for c in calls] == [(unary, "OK", None, "", 1, 1)] * 2
    for c in calls:
        assert not {k for k in c.attributes if k.startswith("hostagent.http2.")}, c.attributes
    assert [c.response_size for c in calls] == [20011, 14]  # every DATA length was seen
    assert parser.stats.truncated == 2 and parser.stats.extra == {}


def test_frames_found_at_the_end_of_a_big_write_keep_the_table() -> None:
    """A 100 KB reply in 16 KB DATA frames (Go, nginx): the frames after the first are not seen,
    the trailers are found at the end of the write's tail. The big call gets its status, its size
    is unknowable (not reported), and the next call's trailers decode with the table kept."""
    enc_out, enc_in = hpack.Encoder(), hpack.Encoder()
    out, inn = Direction.EGRESS, Direction.INGRESS
    p = Http2Parser()
    calls = p.feed(seg(out, PREFACE + frame(SETTINGS, 0, 0, b""), 1))
    calls += p.feed(seg(inn, frame(SETTINGS, 0, 0, b""), 2))
    for sid, reply, t in ((1, b"R" * 100_000, 10), (3, b"pong", 20)):
        req, resp = _grpc_exchange(enc_out, enc_in, sid, b"ping", reply)
        head, rest = resp[: 9 + parse_header(resp)[0]], resp[9 + parse_header(resp)[0] :]
        calls += p.feed(captured(Segment(out, req, len(req), t)))
        calls += p.feed(captured(Segment(inn, head + in_16k_frames(rest), len(head) + len(in_16k_frames(rest)), t + 5)))
    assert [(c.start_ns, c.attributes["rpc.response.status_code"], c.response_size) for c in calls] == [
        (10, "OK", SIZE_UNKNOWN), (20, "OK", 9)
    ]
    assert all("hostagent.http2.headers_incomplete" not in c.attributes for c in calls)
    assert "hostagent.http2.end_unseen" not in calls[0].attributes
    assert p.stats.extra == {"frames_skipped": 1}


def _post(sid: int) -> bytes:
    block = hpack.Encoder().encode([(":method", "POST"), (":path", "/b"), (":scheme", "http"), (":authority", "h")])
    return frame(HEADERS, 0x4, sid, block)


def _answer(p: Http2Parser, sid: int) -> Call:
    resp = frame(HEADERS, 0x5, sid, hpack.Encoder().encode([(":status", "200")]))
    (call,) = p.feed(seg(Direction.INGRESS, frame(SETTINGS, 0, 0, b"") + resp, 9))
    return call


@pytest.mark.parametrize(
    ("first_captured", "body", "size"),
    [
        # (bytes of the first DATA frame's 5000-byte payload the capture holds, body, size)
        (5000, b"a" * 5000 + b"b" * 100, 5100),  # all captured: both frames' bytes, in order
        (4087, b"a" * 4087, 5100),  # cut (a call past the kernel's copy): the prefix, not b"b"s after the gap
        (0, b"", 5100),  # nothing of it: nothing, though the next frame was captured
    ],
)
def test_a_body_stops_where_the_capture_cut_a_data_frame(first_captured: int, body: bytes, size: int) -> None:
    """The body is the bytes that moved, from the first, up to the first DATA payload the capture
    did not hold whole: a later frame's bytes are never joined on across the gap."""
    p = Http2Parser(body_limit=8192)
    p.feed(seg(Direction.EGRESS, PREFACE + frame(SETTINGS, 0, 0, b"") + _post(1), 1))
    first = frame(DATA, 0, 1, b"a" * 5000)
    p.feed(Segment(Direction.EGRESS, first[: 9 + first_captured], len(first), 2))
    p.feed(seg(Direction.EGRESS, frame(DATA, 0x1, 1, b"b" * 100), 3))
    call = _answer(p, 1)
    assert (call.request_body, call.request_size) == (body, size)


def test_a_body_stops_where_frames_went_by_unseen() -> None:
    """Calls lost in the kernel between two DATA frames: the size is unknowable (SIZE_UNKNOWN) and
    the body keeps only what came before the loss."""
    p = Http2Parser(body_limit=8192)
    p.feed(seg(Direction.EGRESS, PREFACE + frame(SETTINGS, 0, 0, b"") + _post(1) + frame(DATA, 0, 1, b"a" * 10), 1))
    p.lost()
    p.feed(seg(Direction.EGRESS, frame(DATA, 0x1, 1, b"c" * 10), 3))
    call = _answer(p, 1)
    assert (call.request_body, call.request_size) == (b"a" * 10, SIZE_UNKNOWN)
    assert call.response_size == SIZE_UNKNOWN


@pytest.mark.parametrize(
    ("lost_at", "request_size", "truncated"),
    [
        # (when the loss came, the request's http.request.body.size (None: not claimed), its truncated)
        ("mid_request", None, True),  # between the request's DATA frames: its size and the rest unknown
        ("after_request", 10, False),  # after its END_STREAM: the request was seen whole
        (None, 10, False),  # no loss: whole and sized
    ],
)
def test_a_stream_whose_frames_went_by_unseen_says_truncated(
    lost_at: Optional[str], request_size: Optional[int], truncated: bool
) -> None:
    """Through the span's wire detail: a body whose frames may have been lost is truncated and has
    no size (it said truncated=false with no size before), in both directions while they were open."""
    p = Http2Parser(body_limit=8192)
    p.feed(seg(Direction.EGRESS, PREFACE + frame(SETTINGS, 0, 0, b"") + _post(1) + frame(DATA, 0, 1, b"a" * 5), 1))
    if lost_at == "mid_request":
        p.lost()
    p.feed(seg(Direction.EGRESS, frame(DATA, 0x1, 1, b"c" * 5), 2))
    resp = frame(HEADERS, 0x4, 1, hpack.Encoder().encode([(":status", "200")])) + frame(DATA, 0, 1, b"r" * 7)
    p.feed(seg(Direction.INGRESS, frame(SETTINGS, 0, 0, b"") + resp, 3))
    if lost_at == "after_request":
        p.lost()
    (call,) = p.feed(seg(Direction.INGRESS, frame(DATA, 0x1, 1, b"s" * 3), 4))
    attrs = with_wire_detail(call, CaptureSettings(bodies=True, body_max_bytes=8192)).attributes
    assert attrs.get("http.request.body.size") == request_size
    assert attrs["hostagent.http.request.body.truncated"] is truncated
    lost = lost_at is not None
    assert attrs.get("http.response.body.size") == (None if lost else 10)
    assert attrs["hostagent.http.response.body.truncated"] is lost
    # frames lost before the response began may have been its own: none of it is kept then
    kept = {"mid_request": "", "after_request": "r" * 7, None: "r" * 7 + "sss"}[lost_at]
    assert attrs["hostagent.http.response.body"] == kept

