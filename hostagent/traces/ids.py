"""Span/trace ids and W3C ``traceparent`` parsing.

Ids: a ``random.Random`` seeded from the OS (SystemRandom) is ~10x faster per id than
``os.urandom`` and random enough for ids (they must be unique, not secret; the SDK does the
same). It is reseeded in a forked child so parent and child never share a sequence.

traceparent: https://www.w3.org/TR/trace-context/#traceparent-header
    version "-" trace-id "-" parent-id "-" trace-flags
    00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
All fields are lowercase hex. Version ff is forbidden. All-zero trace-id or parent-id is
invalid. A version above 00 is parsed by its first 55 characters (the 00 layout), which must be
followed by the end of the value or a "-" (the spec's forward-compatibility rule).
"""

from __future__ import annotations

import os
import random
import re
from typing import Final, Optional

_rng: Final = random.Random(random.SystemRandom().getrandbits(128))
# Its getrandbits, bound once: compiled, ``_rng.getrandbits(...)`` is a method lookup per id. (A
# reseed, at fork or by a test, changes this same generator.)
_getrandbits: Final = _rng.getrandbits


def _reseed() -> None:
    _rng.seed(random.SystemRandom().getrandbits(128))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_span_id() -> int:
    """A random non-zero 64-bit span id."""
    while True:
        value = _getrandbits(64)
        if value:
            return value


def new_trace_id() -> int:
    """A random non-zero 128-bit trace id."""
    while True:
        value = _getrandbits(128)
        if value:
            return value


# version, trace-id, parent-id, flags, then (future versions only) anything after a "-".
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL)

TraceParent = tuple[int, int, int]  # (trace_id, parent_span_id, flags)


def parse_traceparent(value: Optional[str]) -> Optional[TraceParent]:
    """Parse a W3C traceparent; None when it is absent or invalid (the trace then restarts).

    A regular expression, not slicing and per-character checks: this runs for every request
    that carries the header and the regex is ~5x faster.
    """
    if not value:
        return None
    # Optional whitespace around a header value is not part of it (RFC 9110 5.5).
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_hex, parent_hex, flags_hex, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    trace_id = int(trace_hex, 16)
    parent_id = int(parent_hex, 16)
    if trace_id == 0 or parent_id == 0:
        return None
    flags = int(flags_hex, 16)
    if version != "00":
        # Only the sampled bit has a meaning we can rely on for an unknown future version.
        flags &= 0x01
    return trace_id, parent_id, flags


def format_traceparent(trace_id: int, span_id: int, flags: int = 1) -> str:
    """The version-00 traceparent for these ids (tests and header injection)."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
