"""gRPC rules (semantic conventions v1.44) and message counting."""

from __future__ import annotations

from typing import Optional

import pytest

from hostagent.model import Direction, Role
from hostagent.protocols import grpc
from hostagent.protocols.http2_streams import Stream, to_call


@pytest.mark.parametrize(
    ("raw", "name"),
    [("0", "OK"), ("1", "CANCELLED"), ("5", "NOT_FOUND"), ("14", "UNAVAILABLE"), ("16", "UNAUTHENTICATED"),
     ("17", "17"), ("x", "x")],
)  # fmt: skip
def test_status_names(raw: str, name: str) -> None:
    assert grpc.status_name(raw) == name


# v1.44: client spans - every status but OK is an error; server spans - only these six.
@pytest.mark.parametrize(
    ("status", "client_error", "server_error"),
    [
        ("OK", False, False),
        ("CANCELLED", True, False),
        ("UNKNOWN", True, True),
        ("INVALID_ARGUMENT", True, False),
        ("DEADLINE_EXCEEDED", True, True),
        ("NOT_FOUND", True, False),
        ("PERMISSION_DENIED", True, False),
        ("RESOURCE_EXHAUSTED", True, False),
        ("UNIMPLEMENTED", True, True),
        ("INTERNAL", True, True),
        ("UNAVAILABLE", True, True),
        ("DATA_LOSS", True, True),
        ("UNAUTHENTICATED", True, False),
    ],
)
def test_error_rules(status: str, client_error: bool, server_error: bool) -> None:
    assert grpc.is_error(status, Role.CLIENT) is client_error
    assert grpc.is_error(status, Role.SERVER) is server_error


@pytest.mark.parametrize(
    ("h2", "status"),
    [("CANCEL", "CANCELLED"), ("REFUSED_STREAM", "UNAVAILABLE"), ("ENHANCE_YOUR_CALM", "RESOURCE_EXHAUSTED"),
     ("PROTOCOL_ERROR", "INTERNAL"), ("NO_ERROR", "INTERNAL")],
)  # fmt: skip
def test_status_from_http2_error(h2: str, status: str) -> None:
    assert grpc.status_from_h2_error(h2) == status


def test_call_attributes_and_unimplemented_method() -> None:
    attrs, name = grpc.call_attributes("/pkg.Svc/Do", "OK")
    assert (attrs, name) == (
        {"rpc.system.name": "grpc", "rpc.response.status_code": "OK", "rpc.method": "pkg.Svc/Do"},
        "pkg.Svc/Do",
    )
    # v1.44: a method the server does not recognise is "_OTHER", the span name is rpc.system.name
    attrs, name = grpc.call_attributes("/pkg.Svc/Nope", "UNIMPLEMENTED")
    assert attrs["rpc.method"] == "_OTHER" and attrs["rpc.method_original"] == "pkg.Svc/Nope"
    assert name == "grpc"


def test_grpc_message_is_percent_decoded() -> None:
    assert grpc.decode_message("caf%C3%A9 %25 done") == "café % done"


# DATA payloads captured from grpcio (tests/fixtures/http2/grpc_shapes.json)
UNARY_REQUEST = bytes.fromhex("00000000070a0568656c6c6f")  # uncompressed, length 7, "hello"
REPLY = bytes.fromhex("00000000090a0568656c6c6f1001")  # length 9: text "hello", seq 1


@pytest.mark.parametrize(
    ("chunks", "count"),
    [
        ([UNARY_REQUEST], 1),
        ([REPLY * 3], 3),
        ([REPLY[:3], REPLY[3:] + REPLY[:8], REPLY[8:]], 2),  # prefixes split across DATA frames
        ([b"\x00\x00\x00\x00\x00"], 1),  # an empty message
        ([], 0),
    ],
)
def test_message_counter(chunks: list[bytes], count: int) -> None:
    counter = grpc.MessageCounter()
    for c in chunks:
        counter.feed(c)
    assert counter.count == count


def test_message_counter_skips_uncaptured_bytes_honestly() -> None:
    counter = grpc.MessageCounter()
    counter.feed(REPLY[:7])  # prefix known: 9-byte message, 2 of it seen
    counter.skip(7)  # the rest of that message went by uncaptured: still countable
    counter.feed(REPLY)
    assert counter.count == 2
    counter.skip(3)  # the next prefix itself was not captured
    assert counter.count is None
    counter.feed(REPLY)
    assert counter.count is None


@pytest.mark.parametrize(
    ("raw", "ns"),
    [
        ("100m", 100_000_000),  # grpcio, timeout=0.1
        ("1S", 1_000_000_000),
        ("2H", 7_200_000_000_000),
        ("5M", 300_000_000_000),
        ("250u", 250_000),
        ("99999999n", 99_999_999),  # 8 digits at most
        ("123456789n", None),
        ("100", None),  # no unit
        ("m", None),
        ("10x", None),
        ("-1S", None),
        ("\u0661\u0660S", None),  # Arabic-Indic digits: str.isdigit, not ASCII
        (None, None),
    ],
)
def test_grpc_timeout(raw: str | None, ns: int | None) -> None:
    assert grpc.timeout_ns(raw) == ns


@pytest.mark.parametrize(
    ("h2", "timeout", "elapsed_ms", "status"),
    [
        ("CANCEL", 100, 101, "DEADLINE_EXCEEDED"),  # grpcio: RST_STREAM 101 ms after the request
        ("CANCEL", 100, 100, "DEADLINE_EXCEEDED"),
        ("CANCEL", 1100, 1000, "DEADLINE_EXCEEDED"),  # 1.01 s left, sent as "11" x 100 ms
        ("CANCEL", 100, 89, "CANCELLED"),  # cancelled before its deadline
        ("CANCEL", None, 5000, "CANCELLED"),  # no deadline at all
        ("REFUSED_STREAM", 100, 200, "UNAVAILABLE"),  # only CANCEL is how a deadline resets
    ],
)
def test_status_from_reset(h2: str, timeout: int | None, elapsed_ms: int, status: str) -> None:
    ns = None if timeout is None else timeout * 1_000_000
    assert grpc.status_from_reset(h2, ns, elapsed_ms * 1_000_000) == status


# A grpcio channel opened before the agent (acceptance run, calls on it after the agent started):
# what HPACK let the parser decode of each stream. content-type, te and grpc-status come indexed
# from the dynamic table the channel filled earlier; grpc-message is a literal every time.
_LATE_REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/acc.test.v1.Shop/ListItems"),
                 ("x-i", "k1.sstream")]  # fmt: skip


@pytest.mark.parametrize(
    ("request_headers", "response", "trailers", "protocol", "name", "method"),
    [
        (_LATE_REQUEST, [(":status", "200")], [("grpc-message", "")], "grpc", "acc.test.v1.Shop/ListItems",
         "acc.test.v1.Shop/ListItems"),
        # :path indexed too (the channel's GetItem): gRPC, method unknown
        ([(":method", "POST"), ("x-i", "k1.small")], [(":status", "200"), ("x-srv", "1")],
         [("grpc-message", "")], "grpc", "grpc", None),
        # nothing gRPC's own decoded: an HTTP/2 POST as before
        (_LATE_REQUEST, [(":status", "200")], [], "http2", "POST", None),
    ],
)
def test_a_stream_with_headers_lost_is_grpc_by_a_grpc_header(
    request_headers: list[tuple[str, str]], response: list[tuple[str, str]], trailers: list[tuple[str, str]],
    protocol: str, name: str, method: Optional[str],
) -> None:  # fmt: skip
    s = Stream(sid=5, initiator=Direction.EGRESS, start_ns=1_000, end_ns=2_000, request=request_headers,
               response=response, trailers=trailers, incomplete=True)  # fmt: skip
    call = to_call(s)
    assert (call.protocol, call.name, call.attributes.get("rpc.method")) == (protocol, name, method)
    assert "rpc.response.status_code" not in call.attributes  # grpc-status was not decoded
    assert "error.type" not in call.attributes
