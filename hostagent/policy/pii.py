"""Built-in PII detectors: what the agent hides by default, before anything is exported.

Each detector is a regular expression plus, where the shape alone is too loose, a check (card
numbers must pass Luhn). Only the sensitive part of a match is replaced (``group("v")``), so
context stays readable: ``Bearer [REDACTED:bearer]``, ``password=[REDACTED:secret_param]``,
``https://bob:[REDACTED:url_password]@db``.

Order matters: URL passwords run before e-mail (``user:pw@host.com`` would otherwise look like
an address) and JWTs before bearer tokens (a bearer JWT is reported as ``jwt``). A cheap
substring ``trigger`` skips a detector when its regex cannot match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes (ISO/IEC 7812-1)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card_ok(match: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", match.group("v"))
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


@dataclass(frozen=True)
class Detector:
    name: str  # the PII type reported in hostagent.pii.types and [REDACTED:<name>]
    regex: re.Pattern[str]  # the part to replace: the first of groups v, v2, v3 that matched
    triggers: tuple[str, ...] = ()  # substrings one of which must be present (lowercase text)
    check: Optional[Callable[[re.Match[str]], bool]] = None


_SECRET_KEYS = (
    r"password|passwd|pwd|pass|secret|client_secret|token|access_token|refresh_token|id_token|"
    r"auth_token|session_token|api_key|apikey|api-key|x-api-key|private_key|credentials?"
)

DETECTORS: tuple[Detector, ...] = (
    # scheme://user:password@host -- keep scheme and user, hide the password.
    Detector(
        "url_password",
        re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#\[\]]+:(?P<v>[^\s/@?#\[\]]+)@"),
        ("://",),
    ),
    Detector(
        "jwt",
        re.compile(r"(?P<v>\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)"),
        ("eyj",),
    ),
    Detector(
        "bearer",
        re.compile(r"(?i)\bbearer\s+(?P<v>[A-Za-z0-9\-._~+/]{8,}=*)"),
        ("bearer",),
    ),
    # key=value in query strings, form bodies, SQL (password='x') and key: value / "key": "value".
    Detector(
        "secret_param",
        re.compile(
            r"(?i)(?:^|(?<=[?&;,\s{(]))[\"']?(?:" + _SECRET_KEYS + r")[\"']?\s*[=:]\s*"
            r"(?:\"(?P<v>[^\"]+)\"|'(?P<v2>[^']+)'|(?P<v3>[^&\s#;,\"'})]+))"
        ),
        ("pass", "pwd", "secret", "token", "key", "credential"),
    ),
    Detector(
        "email",
        re.compile(r"(?P<v>[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24})\b"),
        ("@",),
    ),
    # 13-19 digits, optionally grouped by spaces or dashes, starting like a real IIN (2-6).
    Detector(
        "card",
        re.compile(r"(?<![\d.])(?P<v>[2-6]\d{3}(?:[ -]?\d){9,15})(?![\d])"),
        (),
        _card_ok,
    ),
)

# A cheap test of whether any detector could match: most captured strings (paths, methods,
# addresses, SQL without literals) contain none of these words and no 5-digit run that starts like
# a card, and skip every detector. Substring tests are C-speed; one regex handles the digits.
# Keep TRIGGER_WORDS a superset of the detectors' triggers.
TRIGGER_WORDS = ("@", "://", "eyj", "bearer", "pass", "pwd", "secret", "token", "key", "credential")
_TRIGGER_BYTES = tuple(t.encode() for t in TRIGGER_WORDS)
_CARD_START = re.compile(r"[2-6]\d{3}[ -]?\d")
_CARD_START_BYTES = re.compile(rb"[2-6]\d{3}[ -]?\d")


def may_contain_pii(text: str) -> bool:
    lowered = text.lower()
    return any(t in lowered for t in TRIGGER_WORDS) or _CARD_START.search(text) is not None


def may_contain_pii_bytes(data: bytes) -> bool:
    lowered = data.lower()
    return any(t in lowered for t in _TRIGGER_BYTES) or _CARD_START_BYTES.search(data) is not None


DETECTOR_NAMES = (*(d.name for d in DETECTORS), "sensitive_header")

# Header values hidden whole (names lowercased). Their attribute forms
# (http.request.header.<name>) are hidden too.
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)
