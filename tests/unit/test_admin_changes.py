"""The pure change functions: exact results, and refusals that say why."""

from __future__ import annotations

import math

import pytest

from hostagent.admin.changes import (
    ChangeError,
    add_rule,
    remove_rule,
    set_capture,
    set_pii,
    set_probe,
    set_sampling,
    validate_capture,
)
from hostagent.settings import CaptureOverride, CaptureSettings, RedactionRule, RedactionSettings, SamplingSettings
from hostagent.traces.wire import capture_for

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


# Config-like starting point: one override per service and one per protocol.
C = CaptureSettings(
    overrides=(CaptureOverride(service="shop", bodies=True), CaptureOverride(protocol="grpc", headers=False))
)
SHOP = CaptureOverride(service="shop", bodies=True)
GRPC = CaptureOverride(protocol="grpc", headers=False)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"headers": False}, CaptureSettings(headers=False, overrides=C.overrides)),
        ({"bodies": True, "body_max_bytes": 4096},
         CaptureSettings(bodies=True, body_max_bytes=4096, overrides=C.overrides)),
        ({"raw_sql": True}, CaptureSettings(raw_sql=True, overrides=C.overrides)),
        ({"body_max_bytes": 0}, CaptureSettings(body_max_bytes=0, overrides=C.overrides)),
        ({"body_max_bytes": 1 << 20}, CaptureSettings(body_max_bytes=1 << 20, overrides=C.overrides)),
        # service/protocol "*" or "" is the base, not an override
        ({"headers": False, "service": "*", "protocol": "*"}, CaptureSettings(headers=False, overrides=C.overrides)),
        # a changed override keeps its other fields and moves last (it wins)
        ({"body_max_bytes": 64, "service": "shop"},
         CaptureSettings(overrides=(GRPC, CaptureOverride(service="shop", bodies=True, body_max_bytes=64)))),
        # a new one is appended
        ({"headers": False, "service": "cart", "protocol": "http"},
         CaptureSettings(overrides=(SHOP, GRPC, CaptureOverride("cart", "http", headers=False)))),
        ({"bodies": True, "protocol": "http"},
         CaptureSettings(overrides=(SHOP, GRPC, CaptureOverride(protocol="http", bodies=True)))),
        ({"clear_override": True, "service": "shop"}, CaptureSettings(overrides=(GRPC,))),
        ({"clear_override": True, "protocol": "grpc"}, CaptureSettings(overrides=(SHOP,))),
    ],
)
def test_capture_changes(kwargs, expected) -> None:
    assert set_capture(C, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "message", "code"),
    [
        ({"body_max_bytes": -1}, "body_max_bytes must be between 0 and 1048576, got -1", "INVALID_ARGUMENT"),
        ({"body_max_bytes": (1 << 20) + 1}, "body_max_bytes must be between 0 and 1048576, got 1048577",
         "INVALID_ARGUMENT"),
        ({"headers": True, "protocol": "kafka"}, "unknown protocol 'kafka'; valid protocols: http, http2, grpc",
         "INVALID_ARGUMENT"),
        ({"headers": True, "service": "x" * 300}, "service name must be 1-255 printable", "INVALID_ARGUMENT"),
        ({"headers": True, "service": "a\nb"}, "service name must be 1-255 printable", "INVALID_ARGUMENT"),
        ({"raw_sql": True, "service": "shop"}, "raw_sql applies to every service and protocol", "INVALID_ARGUMENT"),
        ({}, "nothing to change: give headers, bodies, body_max_bytes or raw_sql", "INVALID_ARGUMENT"),
        ({"service": "shop"}, "nothing to change", "INVALID_ARGUMENT"),
        ({"clear_override": True}, "clear_override needs a service or a protocol", "INVALID_ARGUMENT"),
        ({"clear_override": True, "service": "shop", "bodies": False}, "not both", "INVALID_ARGUMENT"),
        ({"clear_override": True, "service": "nope"},
         r"no capture override for nope/\* \(overrides: shop/\*, \*/grpc\)", "NOT_FOUND"),
    ],
)
def test_capture_refusals(kwargs, message, code) -> None:
    with pytest.raises(ChangeError, match=message) as exc:
        set_capture(C, **kwargs)
    assert exc.value.code == code


def test_capture_override_limit() -> None:
    full = CaptureSettings(overrides=tuple(CaptureOverride(service=f"s{i}", bodies=True) for i in range(256)))
    with pytest.raises(ChangeError, match="at most 256 capture overrides"):
        set_capture(full, bodies=True, service="one-more")
    assert len(set_capture(full, bodies=False, service="s3").overrides) == 256  # changing one is fine


def test_the_override_just_set_is_the_one_that_applies() -> None:
    """Through the wire stage's own resolution: later overrides win, so moving last matters."""
    c = CaptureSettings(
        overrides=(CaptureOverride(service="shop", bodies=True), CaptureOverride(protocol="http", bodies=False))
    )
    assert capture_for(c, "shop", "http").bodies is False  # the protocol override came later
    c = set_capture(c, bodies=True, service="shop")
    assert capture_for(c, "shop", "http").bodies is True
    assert capture_for(c, "other", "http").bodies is False


def test_validate_capture_of_stored_settings() -> None:
    validate_capture(C)
    for bad in (
        CaptureSettings(body_max_bytes=-5),
        CaptureSettings(overrides=(CaptureOverride(protocol="kafka"),)),
        CaptureSettings(overrides=(CaptureOverride(service="s", body_max_bytes=1 << 21),)),
    ):
        with pytest.raises(ChangeError):
            validate_capture(bad)
