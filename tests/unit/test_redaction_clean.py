"""Redactor.is_clean: the fast path that lets a Call through unchanged must never let PII through.

A Call whose every field was already seen clean passes with set lookups; any field not seen, or
seen with something to replace, sends the Call through the full ``apply``.
"""

from __future__ import annotations

from typing import Any

import pytest

from hostagent.model import Call, Role
from hostagent.policy.redaction import Redactor
from hostagent.settings import RedactionRule, RedactionSettings

KEY = b"k" * 32
HEADERS = (("server", "nginx/1.22.1"), ("content-type", "text/html"))


def call(**kw: Any) -> Call:
    base: dict[str, Any] = dict(
        protocol="http", role=Role.SERVER, start_ns=1, end_ns=2, name="GET",
        attributes={"url.path": "/index.html", "http.response.status_code": 200,
                    "http.response.header.server": ("nginx/1.22.1",)},
        response_headers=HEADERS, response_body=b"<h1>hello</h1>",
    )  # fmt: skip
    base.update(kw)
    return Call(**base)


def test_unknown_call_is_not_clean_until_applied() -> None:
    r = Redactor(RedactionSettings(), KEY)
    c = call()
    assert r.is_clean(c) is False
    out = r.apply(c)
    assert out.call is c and out.counts == {}
    assert r.is_clean(call()) is True  # an equal Call, other objects: every field known clean


@pytest.mark.parametrize(
    ("change", "found"),
    [
        # a new attribute value carrying an e-mail address
        ({"attributes": {"url.path": "/u/alice@example.com", "http.response.status_code": 200}}, {"email": 1}),
        # the same clean value under a sensitive header's key is masked, not clean
        ({"attributes": {"http.request.header.authorization": ("nginx/1.22.1",)}}, {"sensitive_header": 1}),
        # a header tuple with one more, sensitive, header
        ({"request_headers": (("cookie", "sid=1"),)}, {"sensitive_header": 1}),
        # a body with a card number (Luhn-valid)
        ({"request_body": b"card=4111111111111111"}, {"card": 1}),
        # the span name
        ({"name": "GET bob@example.org"}, {"email": 1}),
    ],
)
def test_a_field_with_pii_is_never_taken_for_clean(change: dict[str, Any], found: dict[str, int]) -> None:
    r = Redactor(RedactionSettings(), KEY)
    r.apply(call())  # learn the clean fields of the usual Call
    dirty = call(**change)
    assert r.is_clean(dirty) is False
    assert r.apply(dirty).counts == found
    assert r.is_clean(dirty) is False  # still not: it needed redaction


def test_clean_sets_belong_to_one_redactor() -> None:
    plain = Redactor(RedactionSettings(), KEY)
    ruled = Redactor(RedactionSettings(rules=(RedactionRule("page", r"index"),)), KEY)
    plain.apply(call())
    assert plain.is_clean(call()) is True
    assert ruled.is_clean(call()) is False
    assert ruled.apply(call()).counts == {"page": 1}  # url.path "/index.html", the one field with "index"


def test_inactive_redactor_is_always_clean() -> None:
    r = Redactor(RedactionSettings(pii_detection=False), KEY)
    assert r.active is False
    assert r.is_clean(call(name="a@b.io")) is True


def test_a_header_tuple_known_by_identity_is_still_checked_per_object() -> None:
    r = Redactor(RedactionSettings(), KEY)
    r.apply(call())
    same = call()  # the very HEADERS object: answered from the identity memo after one hash lookup
    assert r.is_clean(same) is True
    assert r.is_clean(same) is True
    # an equal tuple built anew is clean too; a tuple with a sensitive header never is, whatever
    # objects were seen before
    assert r.is_clean(call(response_headers=tuple(list(HEADERS)))) is True
    dirty = call(response_headers=(*HEADERS, ("set-cookie", "sid=1")))
    assert r.is_clean(dirty) is False
    assert r.apply(dirty).counts == {"sensitive_header": 1}
    assert r.is_clean(dirty) is False


class _Hashes(str):
    """A string that counts how often it is hashed (a tuple's hash is its elements' hashes)."""

    hashed = 0

    def __hash__(self) -> int:
        type(self).hashed += 1
        return str.__hash__(self)


def test_an_attribute_value_known_clean_by_identity_is_not_hashed_again() -> None:
    r = Redactor(RedactionSettings(), KEY)
    element = _Hashes("plain")
    _Hashes.hashed = 0
    value = ("plain", element)
    first = call(attributes={"app.tags": value})
    r.apply(first)  # learnt clean
    assert r.is_clean(first) is True  # found by (key, value): hashed, then remembered by identity
    before = _Hashes.hashed
    assert r.is_clean(call(attributes={"app.tags": value})) is True
    assert r.is_clean(call(attributes={"app.tags": value})) is True
    assert _Hashes.hashed == before  # the very object again: one lookup and ``is``, no hash
    # an equal value that is another object is still looked up; a new value is never taken for clean
    assert r.is_clean(call(attributes={"app.tags": ("plain", element)})) is True
    assert _Hashes.hashed > before
    assert r.is_clean(call(attributes={"app.tags": ("4111 1111 1111 1111",)})) is False
    # the same object under another key is another pair: not known
    assert r.is_clean(call(attributes={"app.other": value})) is False
