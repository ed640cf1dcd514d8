"""The pure change functions: exact results, and refusals that say why."""

from __future__ import annotations

import math

import pytest

from hostagent.admin.changes import ChangeError, add_rule, remove_rule, set_pii, set_probe, set_sampling
from hostagent.settings import RedactionRule, RedactionSettings, SamplingSettings

VALID = ("http", "http2", "postgres", "mysql", "redis", "dns")


def test_probes() -> None:
    assert set_probe(frozenset({"http"}), "dns", True, VALID) == {"http", "dns"}
    assert set_probe(frozenset({"http"}), "http", False, VALID) == frozenset()
    with pytest.raises(
        ChangeError, match="unknown probe 'kafka'; valid probes: http, http2, postgres, mysql, redis, dns"
    ):
        set_probe(frozenset(), "kafka", True, VALID)


S = SamplingSettings(ratio=1.0, per_service=(("a", 0.5),))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"ratio": 0.25}, SamplingSettings(0.25, (("a", 0.5),))),
        ({"ratio": 0.0, "service": "a"}, SamplingSettings(1.0, (("a", 0.0),))),
        ({"ratio": 1.0, "service": "b"}, SamplingSettings(1.0, (("a", 0.5), ("b", 1.0)))),
        ({"clear_override": True, "service": "a"}, SamplingSettings(1.0, ())),
        ({"ratio": 0.1, "protocol": "dns"}, SamplingSettings(1.0, (("a", 0.5),), (("dns", 0.1),))),
        ({"keep_errors": True}, SamplingSettings(1.0, (("a", 0.5),), keep_errors=True)),
        ({"keep_slower_than_ms": 500.0}, SamplingSettings(1.0, (("a", 0.5),), keep_slower_than_ms=500.0)),
        ({"keep_slower_than_ms": 0.0}, S),
    ],
)
def test_sampling_changes(kwargs, expected) -> None:
    assert set_sampling(S, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 1.5}, "ratio must be between 0 and 1, got 1.5"),
        ({"ratio": -0.5}, "between 0 and 1"),
        ({"ratio": math.nan}, "between 0 and 1"),
        ({"ratio": 0.5, "service": "a", "protocol": "http"}, "not both"),
        ({"ratio": 0.5, "protocol": "kafka"}, "unknown protocol 'kafka'"),
        ({"clear_override": True}, "needs a service or a protocol"),
        ({"keep_slower_than_ms": -1.0}, "keep_slower_than_ms must be between 0"),
        ({}, "nothing to change"),
        ({"ratio": 0.5, "service": "x" * 300}, "service name must be"),
    ],
)
def test_sampling_refusals(kwargs, message) -> None:
    with pytest.raises(ChangeError, match=message):
        set_sampling(S, **kwargs)


def test_rules() -> None:
    r = add_rule(RedactionSettings(), RedactionRule("a", "x+"))
    assert r.rules == (RedactionRule("a", "x+"),)
    with pytest.raises(ChangeError) as exc:
        add_rule(r, RedactionRule("a", "y"))
    assert exc.value.code == "ALREADY_EXISTS"
    with pytest.raises(ChangeError) as exc:
        add_rule(r, RedactionRule("b", "(y"))
    assert exc.value.code == "INVALID_ARGUMENT" and "invalid regular expression" in str(exc.value)
    assert remove_rule(r, "a").rules == ()
    with pytest.raises(ChangeError) as exc:
        remove_rule(r, "zz")
    assert exc.value.code == "NOT_FOUND" and "(rules: a)" in str(exc.value)


def test_pii() -> None:
    assert set_pii(RedactionSettings(), False) == RedactionSettings(pii_detection=False)
    assert set_pii(RedactionSettings(), True, "hash").mode == "hash"
    with pytest.raises(ChangeError, match="mode must be one of redact, hash"):
        set_pii(RedactionSettings(), True, "rot13")
