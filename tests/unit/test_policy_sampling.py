"""Sampling decisions: identical to OpenTelemetry's for the same trace ids, plus the agent's
overrides and tail rules."""

from __future__ import annotations

import math
import random

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hostagent.policy.sampling import (
    TRACE_ID_LIMIT,
    Sampler,
    parent_sampled_from_flags,
    ratio_bound,
    sampler_for,
    trace_id_ratio_sampled,
)
from hostagent.settings import SamplingSettings

RATIOS = [0.0, 0.0001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1.0]
_RNG = random.Random(7)
IDS = [_RNG.getrandbits(128) | 1 for _ in range(3000)]
LOW = 1 << 64  # a trace id whose low 64 bits are 0: kept for any ratio > 0
HIGH = (5 << 64) | TRACE_ID_LIMIT  # low 64 bits all ones: dropped for any ratio < 1


@pytest.mark.parametrize("ratio", RATIOS)
def test_ratio_decision_equals_opentelemetry(ratio: float) -> None:
    otel = TraceIdRatioBased(ratio)
    ours = Sampler(SamplingSettings(ratio=ratio))
    expected = [otel.should_sample(None, tid, "span").decision.is_sampled() for tid in IDS]
    assert [ours.decide(tid).sampled for tid in IDS] == expected
    assert [trace_id_ratio_sampled(tid, ratio) for tid in IDS] == expected
    assert ratio_bound(ratio) == otel.bound


def test_kept_fraction_follows_the_ratio() -> None:
    kept = sum(Sampler(SamplingSettings(ratio=0.25)).decide(tid).sampled for tid in IDS)
    assert abs(kept / len(IDS) - 0.25) < 0.03


def test_bound_edges() -> None:
    assert ratio_bound(0.5) == 1 << 63
    bound = ratio_bound(0.5)
    assert trace_id_ratio_sampled((9 << 64) | (bound - 1), 0.5) is True
    assert trace_id_ratio_sampled((9 << 64) | bound, 0.5) is False
    assert trace_id_ratio_sampled(LOW, 0.0) is False
    assert trace_id_ratio_sampled(HIGH, 1.0) is True


def _otel_parent_decision(tid: int, sampled: bool, ratio: float) -> bool:
    ctx = SpanContext(
        trace_id=tid, span_id=0xABC, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0)
    )
    parent = trace.set_span_in_context(NonRecordingSpan(ctx))
    return ParentBased(TraceIdRatioBased(ratio)).should_sample(parent, tid, "s").decision.is_sampled()


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("parent_flag", [True, False])
def test_parent_based_equals_opentelemetry(ratio: float, parent_flag: bool) -> None:
    ours = Sampler(SamplingSettings(ratio=ratio))
    for tid in IDS[:500]:
        decision = ours.decide(tid, parent_sampled=parent_flag)
        assert decision.sampled == _otel_parent_decision(tid, parent_flag, ratio)
        assert decision.sampled is parent_flag and decision.reason == "parent"


def test_flags_to_parent_sampled() -> None:
    assert parent_sampled_from_flags(None) is None
    assert parent_sampled_from_flags(0x01) is True
    assert parent_sampled_from_flags(0x00) is False
    assert parent_sampled_from_flags(0x03) is True


OVERRIDES = SamplingSettings(ratio=0.0, per_service=(("checkout", 1.0),), per_protocol=(("redis", 1.0), ("http", 0.0)))


@pytest.mark.parametrize(
    ("service", "protocol", "trace_id", "sampled", "reason"),
    [
        ("checkout", "http", HIGH, True, "service:checkout"),  # service beats protocol
        ("other", "redis", HIGH, True, "protocol:redis"),
        ("other", "http", LOW, False, "protocol:http"),
        ("other", "dns", LOW, False, "ratio"),  # global ratio 0
        (None, None, LOW, False, "ratio"),
    ],
)
def test_overrides_most_specific_wins(service, protocol, trace_id, sampled, reason) -> None:
    decision = Sampler(OVERRIDES).decide(trace_id, service=service, protocol=protocol)
    assert (decision.sampled, decision.reason) == (sampled, reason)


def test_keep_errors_and_slow_calls_override_ratio_and_parent() -> None:
    s = Sampler(SamplingSettings(ratio=0.0, keep_errors=True, keep_slower_than_ms=500))
    assert s.decide(LOW, is_error=True, parent_sampled=False).reason == "error"
    assert s.decide(LOW, is_error=True).sampled is True
    assert s.decide(LOW, duration_ns=500_000_000) == s.decide(LOW, duration_ns=600_000_000)
    assert s.decide(LOW, duration_ns=500_000_000).reason == "slow"
    assert s.decide(LOW, duration_ns=499_999_999).sampled is False
    off = Sampler(SamplingSettings(ratio=0.0))
    assert off.decide(LOW, is_error=True, duration_ns=10**12).sampled is False


def test_head_ignores_tail_rules() -> None:
    s = Sampler(SamplingSettings(ratio=0.0, keep_errors=True))
    assert s.head(LOW).sampled is False


@pytest.mark.parametrize("bad", [1.5, -0.1, math.nan, math.inf])
def test_invalid_ratio_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Sampler(SamplingSettings(ratio=bad))
    with pytest.raises(ValueError, match="override 'x'"):
        Sampler(SamplingSettings(per_service=(("x", bad),)))


def test_sampler_for_is_cached_per_snapshot_and_may_drop() -> None:
    a = SamplingSettings(ratio=0.5)
    assert sampler_for(a) is sampler_for(SamplingSettings(ratio=0.5))
    assert sampler_for(a).may_drop is True
    assert sampler_for(SamplingSettings()).may_drop is False
    assert sampler_for(SamplingSettings(per_protocol=(("dns", 0.1),))).may_drop is True
