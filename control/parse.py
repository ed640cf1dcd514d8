"""Argument values the CLI accepts: durations ("500ms", "2s", "1.5m", plain numbers are ms)."""

from __future__ import annotations

import argparse
import re

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(us|µs|ms|s|m|h)?\s*")
_MS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0, None: 1.0}


def duration_ms(text: str) -> float:
    """Milliseconds in ``text``; argparse shows the ValueError as a usage error (exit 2)."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 500ms, 2s, 1m")
    return float(match.group(1)) * _MS[match.group(2)]


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid ratio {text!r}: use a number from 0 to 1") from None
    if text.endswith("%"):
        raise argparse.ArgumentTypeError("give the ratio as a fraction, e.g. 0.1 for 10%")
    return value
