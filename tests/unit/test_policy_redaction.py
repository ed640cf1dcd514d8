"""Redaction: each built-in detector (true and false positives), modes, user rules, and a Call
with a canary in every field that must come out clean."""

from __future__ import annotations

import re
import stat
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.policy.pii import luhn_ok
from hostagent.policy.redaction import (
    PII_TYPES_ATTRIBUTE,
    PiiCounters,
    Redactor,
    load_or_create_key,
    redactor_for,
)
from hostagent.policy.rules import RuleError, compile_rule, has_nested_quantifier, validate_rules
from hostagent.settings import RedactionRule, RedactionSettings

KEY = b"k" * 32
R = Redactor(RedactionSettings(), KEY)
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


@pytest.mark.parametrize(
    ("text", "expected", "found"),
    [
        # e-mail
        ("contact alice.smith+tag@example.co.uk now", "contact [REDACTED:email] now", {"email": 1}),
        ("a@b.io,c@d.org", "[REDACTED:email],[REDACTED:email]", {"email": 2}),
        # payment cards: Visa, Mastercard grouped by spaces, Amex grouped by dashes (all Luhn-valid)
        ("card=4111111111111111;", "card=[REDACTED:card];", {"card": 1}),
        ("pay 5555 5555 5555 4444 ok", "pay [REDACTED:card] ok", {"card": 1}),
        ("amex 3782-822463-10005", "amex [REDACTED:card]", {"card": 1}),
        # JWT (alone and as a bearer token: reported as jwt)
        (f"t={JWT}", "t=[REDACTED:jwt]", {"jwt": 1}),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED:jwt]", {"jwt": 1}),
        # opaque bearer token
        ("Bearer abc.DEF-ghi_123/x=", "Bearer [REDACTED:bearer]", {"bearer": 1}),
        # passwords in URLs
        ("postgres://app:s3cr3t@db:5432/x", "postgres://app:[REDACTED:url_password]@db:5432/x", {"url_password": 1}),
        (
            "GET https://bob:pa%40ss@example.com/",
            "GET https://bob:[REDACTED:url_password]@example.com/",
            {"url_password": 1},
        ),
        # secrets in query strings, forms, JSON, SQL
        (
            "/login?user=bob&password=hunter2&x=1",
            "/login?user=bob&password=[REDACTED:secret_param]&x=1",
            {"secret_param": 1},
        ),
        ("api_key=ABCD1234", "api_key=[REDACTED:secret_param]", {"secret_param": 1}),
        (
            "?pwd=a&passwd=b&token=c&secret=d",
            "?pwd=[REDACTED:secret_param]&passwd=[REDACTED:secret_param]"
            "&token=[REDACTED:secret_param]&secret=[REDACTED:secret_param]",
            {"secret_param": 4},
        ),
        ('{"password": "hunter2", "n": 1}', '{"password": "[REDACTED:secret_param]", "n": 1}', {"secret_param": 1}),
        (
            "UPDATE u SET password='abc' WHERE id=1",
            "UPDATE u SET password='[REDACTED:secret_param]' WHERE id=1",
            {"secret_param": 1},
        ),
    ],
)
def test_detector_true_positives(text: str, expected: str, found: dict[str, int]) -> None:
    assert R.redact_text(text) == (expected, found)


@pytest.mark.parametrize(
    "text",
    [
        "user@localhost",  # no top-level domain
        "@handle and a@b",
        "4111111111111112",  # fails Luhn
        "1234567890123452",  # passes Luhn but no card starts with 1
        "order 41111111111111111111111",  # 23 digits: not a card
        "v4.1.1.1 at 2024-01-15 10:30:00",
        "ts=1700000000000 id=123456789012",
        "eyJ alone",
        "the bearer of bad news",
        "http://host:8080/path?q=1",
        "passage=3&compass=north&keyboard=qwerty",
        "SELECT name FROM users WHERE id = $1",
    ],
)
def test_detector_false_positives_untouched(text: str) -> None:
    assert R.redact_text(text) == (text, {})


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("4111111111111111", True),
        ("79927398713", True),
        ("79927398710", False),
        ("0", True),
        ("378282246310005", True),
        ("378282246310006", False),
    ],
)
def test_luhn(digits: str, ok: bool) -> None:
    assert luhn_ok(digits) is ok


def test_hash_mode_correlates_equal_values_only() -> None:
    r = Redactor(RedactionSettings(mode="hash"), KEY)
    text, found = r.redact_text("a@b.com x a@b.com y c@d.com")
    tokens = re.findall(r"\[HASHED:email:([0-9a-f]{12})\]", text)
    assert found == {"email": 3} and len(tokens) == 3
    assert tokens[0] == tokens[1] != tokens[2]
    assert "a@b.com" not in text
    other_key, _ = Redactor(RedactionSettings(mode="hash"), b"z" * 32).redact_text("a@b.com")
    assert tokens[0] not in other_key


def test_user_rules_group_or_whole_match_and_modes() -> None:
    rules = (
        RedactionRule("customer", r"cust-(\d+)"),  # group 1 only
        RedactionRule("ssn", r"\b\d{3}-\d{2}-\d{4}\b", "hash"),  # whole match, hashed
    )
    r = Redactor(RedactionSettings(pii_detection=False, rules=rules), KEY)
    text, found = r.redact_text("cust-991 ssn 123-45-6789 mail a@b.com")
    assert re.fullmatch(r"cust-\[REDACTED:customer\] ssn \[HASHED:ssn:[0-9a-f]{12}\] mail a@b.com", text)
    assert found == {"customer": 1, "ssn": 1}


def test_pii_off_keeps_builtins_and_headers_but_rules_apply() -> None:
    r = Redactor(RedactionSettings(pii_detection=False), KEY)
    call = _call(request_headers=(("Authorization", "Basic eDp5"),), attributes={"url.query": "a=b@c.de"})
    assert r.apply(call).call is call
    assert r.active is False


def _call(**kw: Any) -> Call:
    base: dict[str, Any] = {"protocol": "http", "role": Role.SERVER, "start_ns": 1, "end_ns": 2, "name": "GET /"}
    base.update(kw)
    return Call(**base)


CANARY = "canary.9f31@example.org"  # an e-mail: caught by the built-in detector
RULE_CANARY = "ZZ-CANARY-4242"  # caught by a user rule


def test_canary_never_survives_any_field_of_a_call() -> None:
    both = f"{CANARY} {RULE_CANARY}"
    call = _call(
        name=f"GET /u/{both}",
        attributes={
            "url.path": f"/u/{both}",
            "url.query": f"mail={CANARY}&id={RULE_CANARY}",
            "db.query.text": f"SELECT * FROM t WHERE m = '{both}'",
            "user_agent.original": both,
            "http.request.header.x-note": (both, "plain"),
            "http.request.header.cookie": ("sid=123",),
            "http.response.status_code": 200,
        },
        error_type=f"Err {both}",
        status_message=both,
        request_headers=(("Authorization", "Basic dXNlcjpwYXNz"), ("X-Note", both), ("Accept", "*/*")),
        response_headers=(("Set-Cookie", "sid=abc; HttpOnly"), ("Location", f"/x?u={both}")),
        request_body=b'{"email": "' + both.encode() + b'"}',
        response_body=b"\xff\x00" + both.encode() + b"\x80",
        conn=Connection(pid=1, tid=1, fd=3, peer=Endpoint("127.0.0.1", 80)),
    )
    r = Redactor(RedactionSettings(rules=(RedactionRule("canary", r"ZZ-CANARY-\d+"),)), KEY)
    out = r.apply(call)
    assert CANARY not in repr(out.call) and RULE_CANARY not in repr(out.call)
    assert CANARY.encode() not in out.call.request_body + out.call.response_body
    assert out.types == ("canary", "email", "sensitive_header")
    # 12 places hold both canaries: name, url.path, url.query, db.query.text, user_agent.original,
    # the x-note attribute, error_type, status_message, X-Note, Location, both bodies. Sensitive
    # headers: Authorization, Set-Cookie and the cookie attribute.
    assert out.counts == {"email": 12, "canary": 12, "sensitive_header": 3}
    assert out.call.attributes[PII_TYPES_ATTRIBUTE] == ("canary", "email", "sensitive_header")
    assert out.call.attributes["http.request.header.cookie"] == ("[REDACTED:sensitive_header]",)
    assert out.call.attributes["http.response.status_code"] == 200
    assert out.call.request_headers[0] == ("Authorization", "[REDACTED:sensitive_header]")
    assert out.call.request_headers[2] == ("Accept", "*/*")
    # bytes that are not UTF-8 pass through unchanged around the replacement
    assert out.call.response_body == b"\xff\x00[REDACTED:email] [REDACTED:canary]\x80"
    assert out.call.conn == call.conn and out.call.start_ns == 1
    assert PII_TYPES_ATTRIBUTE not in call.attributes  # the input is untouched


def test_clean_call_is_returned_as_is() -> None:
    call = _call(attributes={"url.path": "/health"}, request_body=b"\x00\x01binary")
    out = R.apply(call)
    assert out.call is call and out.types == () and out.counts == {}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_safe_and_idempotent(text: str) -> None:
    once, _ = R.redact_text(text)
    assert R.redact_text(once)[0] == once


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_body_bytes_are_safe(body: bytes) -> None:
    out = R.apply(_call(request_body=body)).call
    if out.request_body == body:
        assert out.request_body is body or out.request_body == body
    else:
        assert b"[REDACTED:" in out.request_body


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (RedactionRule("bad", "(unclosed"), "invalid regular expression"),
        (RedactionRule("big", "a" * 4097), "4097 bytes; the limit is 4096"),
        (RedactionRule("nest", "(a+)+$"), "nested unbounded quantifiers"),
        (RedactionRule("star", "(x.*)+y"), "nested unbounded quantifiers"),
        (RedactionRule("empty", "x*"), "matches the empty string"),
        (RedactionRule("", "x"), "rule name"),
        (RedactionRule("sp ace", "x"), "rule name"),
        (RedactionRule("m", "x", "scramble"), "mode must be one of redact, hash"),
    ],
)
def test_bad_rules_refused(rule: RedactionRule, message: str) -> None:
    with pytest.raises(RuleError, match=re.escape(message)):
        compile_rule(rule)


def test_rule_set_limits() -> None:
    compile_rule(RedactionRule("ok", "a" * 4096))
    with pytest.raises(RuleError, match="already exists"):
        validate_rules((RedactionRule("a", "x"), RedactionRule("a", "y")))
    with pytest.raises(RuleError, match="at most 64"):
        validate_rules(tuple(RedactionRule(f"r{i}", "x") for i in range(65)))
    assert has_nested_quantifier("(?:ab|cd)+e") is False


def test_key_is_created_once_private(tmp_path) -> None:
    key = load_or_create_key(tmp_path / "state")
    assert len(key) == 32
    assert stat.S_IMODE((tmp_path / "state" / "redaction.key").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "state") == key
    assert list((tmp_path / "state").iterdir()) == [tmp_path / "state" / "redaction.key"]


def test_counters_and_cache() -> None:
    counters = PiiCounters()
    counters.add({"email": 2})
    counters.add({"email": 1, "card": 1})
    counters.add({})
    assert counters.snapshot() == {"email": 3, "card": 1}
    assert redactor_for(RedactionSettings(), KEY) is redactor_for(RedactionSettings(), KEY)


PIECES = [
    "a@b.io",
    "x",
    " ",
    "&",
    "?",
    "=",
    "password",
    "token",
    "4111",
    "1111",
    "-",
    "Bearer ",
    "eyJ",
    "abcdefgh",
    "://",
    "u:p@h",
    ".",
    '"',
    "'",
    "key",
    "5",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_fast_path_prefilter_never_changes_the_result(pieces: list[str]) -> None:
    import hostagent.policy.pii as pii

    text = "".join(pieces)
    fast = R.redact_text(text)
    fast_call = R.apply(_call(attributes={"url.query": text}, request_body=text.encode()))
    saved = pii.may_contain_pii, pii.may_contain_pii_bytes
    pii.may_contain_pii = pii.may_contain_pii_bytes = lambda _t: True  # type: ignore[assignment]
    try:  # with the prefilter forced open every detector runs: same result
        assert R.redact_text(text) == fast
        assert R.apply(_call(attributes={"url.query": text}, request_body=text.encode())) == fast_call
    finally:
        pii.may_contain_pii, pii.may_contain_pii_bytes = saved


def test_resource_attributes_are_redacted_too() -> None:
    attrs = {
        "process.command_args": ("curl", "-H", "Authorization: Bearer sekrit-tok-123", "http://h/?password=x"),
        "process.pid": 42,
        "service.name": "curl",
    }
    out, found = R.redact_attributes(attrs)
    assert out == {
        "process.command_args": (
            "curl",
            "-H",
            "Authorization: Bearer [REDACTED:bearer]",
            "http://h/?password=[REDACTED:secret_param]",
        ),
        "process.pid": 42,
        "service.name": "curl",
    }
    assert found == {"bearer": 1, "secret_param": 1}
