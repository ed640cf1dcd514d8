"""HPACK per direction: hpack's Decoder, and PartialDecoder when the dynamic table is unknown.

Header blocks captured from grpcio 1.85 (tests/fixtures/http2/grpc_shapes.json, client -> server).
"""

from __future__ import annotations

from pathlib import Path

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.protocols.http2_frames import HEADERS, PREFACE, parse_header
from hostagent.protocols.http2_hpack import HeaderBlockDecoder, PartialDecoder
from tests.support.h2_recorder import load_chunks

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "http2" / "grpc_shapes.json"

# The Unary request's block: every field a literal with incremental indexing (0x40 prefix).
UNARY_BLOCK = bytes.fromhex(
    "40053a70617468"  # literal, new name ":path" (5)
    "1d2f686f73746167656e742e64656d6f2e76312e44656d6f2f556e617279"  # "/hostagent.demo.v1.Demo/Unary"
    "400a3a617574686f72697479"  # literal, new name ":authority"
    "0f3132372e302e302e313a3138363031"  # "127.0.0.1:18601"
    "83"  # indexed 3: :method POST (static)
    "86"  # indexed 6: :scheme http (static)
    "400c636f6e74656e742d74797065106170706c69636174696f6e2f67727063"  # content-type
    "4002746508747261696c657273"  # te: trailers
    "4014677270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c20677a6970"
    "400a757365722d6167656e7430677270632d707974686f6e2f312e38352e3320677270632d632f35382e302e3020286c696e75783b2063687474703229"
)
UNARY_HEADERS = [
    (":path", "/hostagent.demo.v1.Demo/Unary"),
    (":authority", "127.0.0.1:18601"),
    (":method", "POST"),
    (":scheme", "http"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-accept-encoding", "identity, deflate, gzip"),
    ("user-agent", "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)"),
]


def client_blocks() -> list[bytes]:
    """Every request header block the client sent, in order (HEADERS with END_HEADERS)."""
    stream = b"".join(c.data for c in load_chunks(FIXTURE) if c.dir == "c2s")[len(PREFACE) :]
    blocks, pos = [], 0
    while pos + 9 <= len(stream):
        length, ftype, flags, _ = parse_header(stream, pos)
        if ftype == HEADERS:
            assert flags & 0x4 and not flags & 0x28  # grpcio: one frame, no padding/priority
            blocks.append(stream[pos + 9 : pos + 9 + length])
        pos += 9 + length
    return blocks


def test_captured_unary_block() -> None:
    assert client_blocks()[0] == UNARY_BLOCK
    assert HeaderBlockDecoder().decode(UNARY_BLOCK) == (UNARY_HEADERS, 0)
    assert PartialDecoder().decode(UNARY_BLOCK) == (UNARY_HEADERS, 0)  # all literals: all known


def test_dynamic_references_in_later_requests() -> None:
    blocks = client_blocks()
    assert len(blocks) == 6
    # The second request (ServerStream) is short: only :path is new, the rest are references.
    assert len(blocks[1]) < 60 < len(blocks[0])
    full = HeaderBlockDecoder()
    partial = PartialDecoder()
    for i, block in enumerate(blocks):
        headers, unknown = full.decode(block)
        assert unknown == 0 and full.table_known
        assert headers[2:] == UNARY_HEADERS[2:] or headers[0][0] == ":path"
        # Watching from the start, the partial decoder knows every entry too.
        assert partial.decode(block) == (headers, 0), i


def test_unknown_table_drops_fields_never_guesses() -> None:
    blocks = client_blocks()
    full = HeaderBlockDecoder()
    expected = [full.decode(b)[0] for b in blocks]
    late = HeaderBlockDecoder(table_known=False)  # started watching at the second request
    for block, want in zip(blocks[1:], expected[1:]):
        got, unknown = late.decode(block)
        assert unknown > 0
        assert set(got) <= set(want)
        assert (":method", "POST") in got  # static-table entries always decode


def test_hpack_error_switches_to_partial_and_is_counted() -> None:
    d = HeaderBlockDecoder()
    assert d.decode(b"\xff\xff\xff\xff\x7f") == ([], 1)  # index 2**28: no such entry
    assert d.errors == 1 and not d.table_known
    enc = hpack.Encoder()
    assert d.decode(enc.encode([(":method", "GET"), ("x-a", "1")])) == ([(":method", "GET"), ("x-a", "1")], 0)


def test_partial_decoder_follows_size_updates_and_eviction() -> None:
    enc = hpack.Encoder()
    p = PartialDecoder()
    assert p.decode(enc.encode([("x-one", "1" * 100)]))[1] == 0
    enc.header_table_size = 0  # the encoder signals a size update: everything is evicted
    enc.header_table_size = 4096
    headers, unknown = p.decode(enc.encode([("x-one", "1" * 100), ("x-two", "2")]))
    assert (headers, unknown) == ([("x-one", "1" * 100), ("x-two", "2")], 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_no_block_raises(block: bytes) -> None:
    for decoder in (HeaderBlockDecoder(), HeaderBlockDecoder(table_known=False)):
        headers, unknown = decoder.decode(block)
        assert isinstance(headers, list) and unknown >= 0


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_truncated_block_is_an_error_not_a_crash(cut: int) -> None:
    d = HeaderBlockDecoder()
    headers, unknown = d.decode(UNARY_BLOCK[:cut])
    assert unknown >= 1 or headers == UNARY_HEADERS[: len(headers)]


def test_reference_decoder_agrees_on_captured_blocks() -> None:
    blocks = client_blocks()
    ours, ref = HeaderBlockDecoder(), HeaderBlockDecoder(reference=True)
    for block in blocks:
        assert ours.decode(block) == ref.decode(block)


header_lists = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from([":path", ":method", "content-type", "x-a", "user-agent", "grpc-status", "te"])
            | st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        ),
        max_size=8,
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(header_lists, st.booleans(), st.sampled_from([4096, 256, 64]))
def test_differential_against_hpack_decoder(blocks: list[list[tuple[str, str]]], huffman: bool, size: int) -> None:
    """Header lists encoded by hpack's Encoder (indexing, eviction, size updates) decode the same
    with our decoder as with hpack's, and as what was encoded."""
    enc = hpack.Encoder()
    enc.header_table_size = size
    ours, ref = HeaderBlockDecoder(), HeaderBlockDecoder(reference=True)
    for headers in blocks:
        block = enc.encode(headers, huffman=huffman)
        got = ours.decode(block)
        assert got == ref.decode(block)
        assert got == (headers, 0)
