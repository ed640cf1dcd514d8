"""Wire detail on spans: headers, body sizes, bodies, DB parameters, overrides, and redaction of it all."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostagent.model import Call, Role
from hostagent.policy.redaction import Redactor
from hostagent.settings import CaptureOverride, CaptureSettings, RedactionRule, RedactionSettings
from hostagent.traces.wire import MASK, capture_for, header_attributes, with_wire_detail

# Headers as the HTTP/1 parser returns them for a real curl request and a Flask answer.
REQUEST_HEADERS = (
    ("host", "127.0.0.1:19310"),  # own attribute (server.address): not repeated
    ("user-agent", "curl/7.88.1"),  # own attribute (user_agent.original)
    ("accept", "*/*"),
    ("x-tag", "a"),
    ("x-tag", "b"),  # sent twice: two values, in order
    ("authorization", "Bearer abc.def"),
    ("content-length", "11"),  # framing: not repeated
)
RESPONSE_HEADERS = (("content-type", "text/plain"), ("set-cookie", "sid=1"), ("set-cookie", "x=2"))


def call(**kw: Any) -> Call:
    fields: dict[str, Any] = dict(
        protocol="http", role=Role.SERVER, start_ns=1, end_ns=2, name="POST",
        attributes={"http.request.method": "POST"}, request_headers=REQUEST_HEADERS,
        response_headers=RESPONSE_HEADERS, request_body=b"hello world", response_body=b"ok",
        request_size=11, response_size=2,
    )  # fmt: skip
    fields.update(kw)
    return Call(**fields)


def test_default_settings_give_headers_and_sizes_but_no_bodies() -> None:
    attrs = with_wire_detail(call(), CaptureSettings()).attributes
    assert attrs == {
        "http.request.method": "POST",
        "http.request.header.accept": ("*/*",),
        "http.request.header.x-tag": ("a", "b"),
        "http.request.header.authorization": ("Bearer abc.def",),  # the redaction stage masks it
        "http.response.header.content-type": ("text/plain",),
        "http.response.header.set-cookie": ("sid=1", "x=2"),
        "http.request.body.size": 11,
        "http.response.body.size": 2,
    }


def test_sensitive_headers_masked_here_when_redaction_is_off() -> None:
    attrs = with_wire_detail(call(), CaptureSettings(), mask_sensitive=True).attributes
    assert attrs["http.request.header.authorization"] == (MASK,)
    assert attrs["http.response.header.set-cookie"] == (MASK, MASK)
    assert attrs["http.request.header.accept"] == ("*/*",)


@pytest.mark.parametrize(
    ("body", "size", "limit", "text", "truncated"),
    [
        (b"hello world", 11, 1024, "hello world", False),  # whole body captured and kept
        (b"hello world", 11, 5, "hello", True),  # cut by body_max_bytes
        (b"hello", 5000, 1024, "hello", True),  # the kernel copied a prefix of 5000 bytes
        (b"\xff\xfeab", 4, 1024, "\ufffd\ufffdab", False),  # not UTF-8: replaced, still valid text
        (b"", 300, 1024, "", True),  # sendfile body: size known, bytes never seen
    ],
)
def test_bodies_when_enabled(body: bytes, size: int, limit: int, text: str, truncated: bool) -> None:
    settings = CaptureSettings(bodies=True, body_max_bytes=limit)
    attrs = with_wire_detail(call(request_body=body, request_size=size), settings).attributes
    assert attrs["hostagent.http.request.body"] == text
    assert attrs["hostagent.http.request.body.truncated"] is truncated
    assert attrs["http.request.body.size"] == size


def test_parser_body_size_wins() -> None:
    c = call(attributes={"http.response.body.size": 7}, response_size=9)
    assert with_wire_detail(c, CaptureSettings()).attributes["http.response.body.size"] == 7


def test_headers_off() -> None:
    attrs = with_wire_detail(call(), CaptureSettings(headers=False)).attributes
    assert not [k for k in attrs if ".header." in k]


@pytest.mark.parametrize("protocol", ["postgresql", "mysql"])
def test_db_parameters_only_with_raw_sql(protocol: str) -> None:
    c = Call(protocol=protocol, role=Role.CLIENT, start_ns=1, end_ns=2, name="SELECT t",
             attributes={"db.query.text": "SELECT $1", "db.query.parameter.0": "42"})
    assert with_wire_detail(c, CaptureSettings()).attributes == {"db.query.text": "SELECT $1"}
    assert with_wire_detail(c, CaptureSettings(raw_sql=True)) is c


def test_other_protocols_untouched() -> None:
    c = Call(protocol="redis", role=Role.CLIENT, start_ns=1, end_ns=2, name="GET", request_size=5)
    assert with_wire_detail(c, CaptureSettings(bodies=True)) is c


def test_overrides_per_service_and_protocol_later_wins() -> None:
    base = CaptureSettings(overrides=(
        CaptureOverride(service="checkout", bodies=True, body_max_bytes=4),
        CaptureOverride(protocol="grpc", headers=False),
        CaptureOverride(service="checkout", protocol="grpc", body_max_bytes=2),
    ))  # fmt: skip
    assert capture_for(base, "checkout", "http") == CaptureSettings(bodies=True, body_max_bytes=4)
    assert capture_for(base, "checkout", "grpc") == CaptureSettings(headers=False, bodies=True, body_max_bytes=2)
    assert capture_for(base, "other", "grpc") == CaptureSettings(headers=False)
    assert capture_for(base, "other", "http") == CaptureSettings()


def test_redaction_covers_every_wire_attribute() -> None:
    """What wire adds is redacted by the pipeline's next stage: headers (sensitive ones masked,
    user rules on the rest), bodies, and the sensitive response headers."""
    c = call(request_headers=(*REQUEST_HEADERS, ("x-secret", "canary-0123456789abcdef")),
             request_body=b'{"note": "canary-0123456789abcdef"}', request_size=35)
    wired = with_wire_detail(c, CaptureSettings(bodies=True))
    rules = (RedactionRule("canary", r"canary-[0-9a-f]{16}"),)
    out = Redactor(RedactionSettings(rules=rules), b"k" * 32).apply(wired).call.attributes
    assert out["http.request.header.authorization"] == ("[REDACTED:sensitive_header]",)
    assert out["http.response.header.set-cookie"] == ("[REDACTED:sensitive_header]",) * 2
    assert out["http.request.header.x-secret"] == ("[REDACTED:canary]",)
    assert out["hostagent.http.request.body"] == '{"note": "[REDACTED:canary]"}'
    assert "canary-0123456789abcdef" not in repr(out)


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6), st.binary(max_size=64),
       st.integers(0, 10_000), st.integers(0, 100))
def test_never_raises(headers: list[tuple[str, str]], body: bytes, size: int, limit: int) -> None:
    c = call(request_headers=tuple(headers), request_body=body, request_size=size)
    out = with_wire_detail(c, CaptureSettings(bodies=True, body_max_bytes=limit))
    text = out.attributes.get("hostagent.http.request.body", "")
    assert isinstance(text, str) and len(text) <= limit


def test_config_overrides_and_new_keys() -> None:
    from hostagent.config import ConfigError, parse_config

    c = parse_config({"capture": {"overrides": [{"service": "shop", "protocol": "http", "bodies": True,
                                                 "body_max_bytes": 64}], "link_hold_ms": 900},
                      "receiver": {"grpc": "127.0.0.1:14317", "http": "", "sdk_wait_ms": 7000}}, "t.toml")
    override = CaptureOverride(service="shop", protocol="http", bodies=True, body_max_bytes=64)
    assert c.capture.runtime.overrides == (override,)
    assert c.capture.link_traces is True and c.capture.link_hold_ms == 900
    assert (c.receiver.grpc, c.receiver.http, c.receiver.sdk_wait_ms) == ("127.0.0.1:14317", "", 7000)
    for bad in ({"capture": {"overrides": [{"bodies": "yes"}]}}, {"capture": {"overrides": [{"typo": 1}]}},
                {"receiver": {"grpc": "not an address"}}, {"capture": {"overrides": [{"body_max_bytes": -1}]}}):
        with pytest.raises(ConfigError):
            parse_config(bad, "t.toml")


def test_remembered_header_sets_give_the_same_attributes_and_keep_masking_apart() -> None:
    """Header sets are grouped once and remembered: the second Call must get exactly what the
    first got, and the masked and unmasked forms of one set must never be mixed up."""
    first = with_wire_detail(call(), CaptureSettings()).attributes
    again = with_wire_detail(call(), CaptureSettings()).attributes
    masked = with_wire_detail(call(), CaptureSettings(), mask_sensitive=True).attributes
    plain = with_wire_detail(call(), CaptureSettings()).attributes
    assert again == first == plain
    assert first["http.request.header.authorization"] == ("Bearer abc.def",)
    assert masked["http.request.header.authorization"] == (MASK,)
    assert first["http.request.header.x-tag"] == ("a", "b")
    assert first["http.response.header.set-cookie"] == ("sid=1", "x=2")
    assert masked["http.response.header.set-cookie"] == (MASK, MASK)


def test_same_header_tuple_object_keeps_prefix_and_masking_apart() -> None:
    """One tuple object (a parser hands on the same one for every message with the same head) is
    looked up by identity: prefix and masking must still select their own attributes."""
    headers = (("authorization", "Bearer x"), ("accept", "*/*"))
    out: dict = {}
    header_attributes("http.request.header.", headers, False, out)
    header_attributes("http.response.header.", headers, True, out)
    header_attributes("http.request.header.", headers, False, out)  # again, from memory
    assert out == {
        "http.request.header.authorization": ("Bearer x",), "http.request.header.accept": ("*/*",),
        "http.response.header.authorization": (MASK,), "http.response.header.accept": ("*/*",),
    }  # fmt: skip
    masked: dict = {}
    header_attributes("http.request.header.", headers, True, masked)
    assert masked == {"http.request.header.authorization": (MASK,), "http.request.header.accept": ("*/*",)}
