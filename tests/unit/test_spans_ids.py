"""Trace/span ids and W3C traceparent parsing (https://www.w3.org/TR/trace-context/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostagent.traces.ids import format_traceparent, new_span_id, new_trace_id, parse_traceparent

REPO = Path(__file__).resolve().parents[2]
T = "4bf92f3577b34da6a3ce929d0e0e4736"
P = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{T}-{P}-01", (int(T, 16), int(P, 16), 1)),  # the spec's example, sampled
        (f"00-{T}-{P}-00", (int(T, 16), int(P, 16), 0)),  # not sampled
        (f"00-{T}-{P}-03", (int(T, 16), int(P, 16), 3)),  # level-2 random flag kept for 00
        (f" 00-{T}-{P}-01\t", (int(T, 16), int(P, 16), 1)),  # OWS around the value is not part of it
        (f"01-{T}-{P}-03", (int(T, 16), int(P, 16), 1)),  # future version: only the sampled bit
        (f"cc-{T}-{P}-01-what-the-future-holds", (int(T, 16), int(P, 16), 1)),  # future: "-" + more
        (None, None),
        ("", None),
        (f"00-{T}-{P}-01-", None),  # version 00 is exactly 55 characters
        (f"00-{T}-{P}-1", None),  # flags are 2 hex digits
        (f"00-{T.upper()}-{P}-01", None),  # uppercase hex
        (f"00-{T}-{P.upper()}-01", None),
        (f"0A-{T}-{P}-01", None),  # uppercase version
        (f"ff-{T}-{P}-01", None),  # version ff is invalid
        (f"cc-{T}-{P}-01x", None),  # future version: 56th char must be "-"
        (f"00-{'0' * 32}-{P}-01", None),  # all-zero trace id
        (f"00-{T}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00_{T}_{P}_01", None),  # wrong separators
        (f"00-{T[:-1]}g-{P}-01", None),  # non-hex
        (f"00-{T}-{P}-01\n", None),  # a newline is not OWS
        (f"0-{T}-{P}-01", None),
    ],
)
def test_parse_traceparent(value: Optional[str], expected: Optional[tuple[int, int, int]]) -> None:
    assert parse_traceparent(value) == expected


@given(st.text(max_size=80))
def test_parse_never_raises(value: str) -> None:
    result = parse_traceparent(value)
    if result is not None:
        trace_id, parent_id, flags = result
        assert 0 < trace_id < 2**128 and 0 < parent_id < 2**64 and 0 <= flags < 256


@given(st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.integers(0, 255))
def test_format_parse_roundtrip(trace_id: int, span_id: int, flags: int) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, flags)) == (trace_id, span_id, flags)


def test_ids_nonzero_in_range_and_distinct() -> None:
    spans = [new_span_id() for _ in range(10_000)]
    traces = [new_trace_id() for _ in range(10_000)]
    assert all(0 < s < 2**64 for s in spans) and all(0 < t < 2**128 for t in traces)
    assert len(set(spans)) == 10_000 and len(set(traces)) == 10_000
    # The generator uses the full width (not, say, 63 bits).
    assert any(s >= 2**63 for s in spans) and any(t >= 2**127 for t in traces)


def test_forked_child_gets_a_different_sequence() -> None:
    # In a fresh interpreter: forking this test process, which has gRPC threads from other
    # tests, can deadlock the child in gRPC's own at-fork handlers.
    script = (
        "import os\n"
        "from hostagent.traces.ids import new_span_id\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, new_span_id().to_bytes(8, 'big'))\n"
        "    os._exit(0)\n"
        "child = int.from_bytes(os.read(r, 8), 'big')\n"
        "os.waitpid(pid, 0)\n"
        "print(child, new_span_id())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    )
    child_id, parent_id = (int(x) for x in out.stdout.split())
    assert child_id != parent_id and child_id > 0 and parent_id > 0
