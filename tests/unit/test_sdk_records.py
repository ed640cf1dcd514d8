"""hostagent.traces.sdk_records: a SpanContext made without the SDK's constructor must be the
object the SDK's constructor makes."""

from __future__ import annotations

from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from hostagent.traces import sdk_records

FLAGS = TraceFlags(TraceFlags.SAMPLED)
STATE = TraceState([("vendor", "x")])


def test_the_installed_sdk_takes_the_direct_path() -> None:
    assert sdk_records.FAST is True


def test_contexts_equal_the_sdks_valid_or_not() -> None:
    cases = [
        (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False),
        ((1 << 128) - 1, (1 << 64) - 1, True),
        (0, 5, False),  # invalid trace id
        (5, 0, False),  # invalid span id
        (1 << 128, 5, False),  # out of range
    ]
    for trace_id, span_id, remote in cases:
        got = sdk_records.new_context(trace_id, span_id, remote, FLAGS, STATE)
        want = SpanContext(trace_id, span_id, is_remote=remote, trace_flags=FLAGS, trace_state=STATE)
        assert type(got) is SpanContext
        assert got == want
        assert (got.trace_id, got.span_id, got.is_remote, got.trace_flags, got.trace_state, got.is_valid) == (
            want.trace_id, want.span_id, want.is_remote, want.trace_flags, want.trace_state, want.is_valid)
