"""The clock conversion SpanBuilder uses, and the Resource type every span is exported under."""

from __future__ import annotations

import time

from opentelemetry.sdk.resources import Resource

from hostagent.identity.resource import FrozenResource
from hostagent.traces.clock import MonotonicToUnix, measure_offset_ns


def test_clock_offset_matches_the_system() -> None:
    offset = measure_offset_ns()
    direct = time.time_ns() - time.monotonic_ns()
    assert abs(offset - direct) < 1_000_000  # within 1 ms (the direct read is the sloppy one)
    clock = MonotonicToUnix()
    mono = time.monotonic_ns()
    assert abs(clock.to_unix(mono) - time.time_ns()) < 5_000_000


def test_clock_fixed_offset_and_refresh() -> None:
    clock = MonotonicToUnix(offset_ns=10)
    assert clock.to_unix(5) == 15
    new = clock.refresh()
    assert clock.offset_ns == new and abs(new - (time.time_ns() - time.monotonic_ns())) < 1_000_000


def test_frozen_resource_hashes_and_compares_like_resource() -> None:
    attrs = {"service.name": "a", "process.pid": 1}
    frozen, plain = FrozenResource(attrs), Resource(attrs)
    assert hash(frozen) == hash(plain) and frozen == plain and plain == frozen
    assert frozen != FrozenResource({"service.name": "b"})
    assert {frozen: 1}[plain] == 1  # the encoder's grouping dict treats them as one Resource
