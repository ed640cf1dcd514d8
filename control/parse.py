"""Argument values the CLI accepts: durations ("500ms", "2s", "1.5m", plain numbers are ms), byte
sizes ("4096", "4k", "64KiB", "1M"), on/off switches, a timeout in seconds, a count."""

from __future__ import annotations

import argparse
import math
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


_SIZE = re.compile(r"\s*(\d+)\s*(k|kb|kib|m|mb|mib|b)?\s*", re.IGNORECASE)
_BYTES = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def byte_size(text: str) -> int:
    """Bytes in ``text`` (k/M are powers of two, as in the config file's body_max_bytes). The range
    is the agent's to check, so that the CLI and the API refuse the same values."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: use bytes, e.g. 4096, 4k, 1M")
    return int(match.group(1)) * _BYTES[(match.group(2) or "").lower()]


def on_off(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"invalid switch {text!r}: use on or off")


def seconds(text: str) -> float:
    """--timeout: seconds above 0 and finite. 0, a negative number, nan or inf gave "the agent did
    not answer in time (try --timeout)" at once, whatever the agent did."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # nan fails both
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r}: use seconds above 0, e.g. 5 or 0.5")
    return value


def count(text: str) -> int:
    """tail --count: 1 or more. A negative count was never reached: tail ran until Ctrl-C."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"invalid count {text!r}: use a whole number from 1 (without --count, tail runs until Ctrl-C)"
        )
    return value
