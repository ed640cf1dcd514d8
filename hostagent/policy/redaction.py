"""Redaction of a Call: every captured string, header and body, before anything is exported.

``Redactor(settings, key).apply(call)`` returns a new Call (the input is never mutated), the PII
types found and how many values each replaced; the Call also gets ``hostagent.pii.types`` when
anything was found. User rules run first (the user's name wins), then the built-in detectors
(hostagent.policy.pii) when PII detection is on.

Modes: "redact" writes ``[REDACTED:<type>]``; "hash" writes ``[HASHED:<type>:<12 hex>]`` where the
hex is HMAC-SHA256 over the value with a per-host key (``load_or_create_key``), so equal values
correlate across spans without being readable or guessable from outside the host.

Bodies are bytes: they are decoded as UTF-8 with ``surrogateescape`` so that bytes which are not
UTF-8 (binary protocols, a prefix cut mid-character) pass through unchanged, byte for byte, and
only text that matched is replaced.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from hostagent.model import Attributes, AttributeValue, Call
from hostagent.policy import pii
from hostagent.policy.pii import DETECTORS, SENSITIVE_HEADERS, Detector
from hostagent.policy.rules import compile_rule
from hostagent.settings import RedactionSettings

PII_TYPES_ATTRIBUTE = "hostagent.pii.types"
HEADER_TYPE = "sensitive_header"
_HEADER_ATTR_PREFIXES = ("http.request.header.", "http.response.header.")
_VALUE_GROUPS = ("v", "v2", "v3")
KEY_FILE = "redaction.key"
MEMO_MAX = 8192  # distinct strings remembered per Redactor
MEMO_VALUE_MAX = 512  # longer strings (bodies) are scanned every time, not remembered
HEADERS_MEMO_MAX = 1024  # header sets remembered as clean (whole tuples: one lookup per message)
HEADERS_MEMO_BYTES = 2048  # larger header sets are checked header by header every time


def load_or_create_key(state_dir: Path | str) -> bytes:
    """The per-host HMAC key under ``state_dir`` (32 random bytes, mode 0600), made once."""
    path = Path(state_dir) / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, os.urandom(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:  # first writer wins, so concurrent starts agree on one key
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


@dataclass(frozen=True)
class Redacted:
    call: Call
    types: tuple[str, ...]  # sorted PII types / rule names found
    counts: dict[str, int]  # values replaced, by type


class PiiCounters:
    """Values redacted since start, by type; shared by pipeline threads, read by status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, counts: dict[str, int]) -> None:
        if counts:
            with self._lock:
                self._counts.update(counts)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


_Replace = Callable[[str, str], str]  # (type, value) -> replacement


class Redactor:
    """The compiled form of one RedactionSettings; thread-safe (no mutable state)."""

    def __init__(self, settings: RedactionSettings, key: bytes) -> None:
        self.settings = settings
        self._key = key
        self._rules = [(r.name, compile_rule(r), r.mode) for r in settings.rules]
        self._detectors: tuple[Detector, ...] = DETECTORS if settings.pii_detection else ()
        self._builtin_mode = settings.mode
        self.active = bool(self._rules or self._detectors)
        # value -> (redacted value, what was replaced): the same header values, paths and user
        # agents recur on nearly every call, so each distinct string is scanned once. Bounded;
        # a plain dict is safe to share between threads here (get/set/clear are atomic).
        self._memo: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {}
        self._memo_attrs: dict[tuple[str, AttributeValue], tuple[AttributeValue, tuple[tuple[str, int], ...]]] = {}
        # What is known to need nothing (the common case): one set lookup per field decides that a
        # whole Call passes unchanged (is_clean), without building anything. Bounded like the memos.
        self._clean_attrs: set[tuple[str, AttributeValue]] = set()
        # attribute key -> the value *object* last found in _clean_attrs under it: the parsers hand
        # on one string per method and path, the wire stage one tuple per distinct header value,
        # span after span, so most attributes pass by one lookup and an identity test instead of
        # a (key, value) pair built, hashed (a tuple's hash is not cached) and compared. Holding
        # the value keeps it alive, so ``is`` can never match another object. Bounded.
        self._clean_last: dict[str, AttributeValue] = {}
        self._clean_texts: set[str] = set()
        self._clean_headers: set[tuple[tuple[str, str], ...]] = set()
        # id -> the very header tuple found clean: HTTP/1 hands on one tuple object per distinct
        # head, and hashing a tuple of pairs is not cached by Python (~1 us per header set here).
        # Holding the object keeps its id from being reused while it is in here.
        self._clean_header_objs: dict[int, tuple[tuple[str, str], ...]] = {}
        self._clean_bodies: set[bytes] = set()

    def _token(self, kind: str, value: str, mode: str) -> str:
        if mode == "hash":
            raw = value.encode("utf-8", "surrogateescape")
            digest = hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:12]
            return f"[HASHED:{kind}:{digest}]"
        return f"[REDACTED:{kind}]"

    def text(self, value: str, found: Counter[str]) -> str:
        """``value`` with every match replaced; adds what it replaced to ``found``."""
        if not value:
            return value
        hit = self._memo.get(value)
        if hit is None:
            local: Counter[str] = Counter()
            hit = (self._scan(value, local), tuple(local.items()))
            if len(value) <= MEMO_VALUE_MAX:
                if len(self._memo) >= MEMO_MAX:
                    self._memo.clear()
                self._memo[value] = hit
        for kind, n in hit[1]:
            found[kind] += n
        return hit[0]

    def _scan(self, value: str, found: Counter[str]) -> str:
        for name, pattern, mode in self._rules:
            value = pattern.sub(functools.partial(self._rule_sub, name=name, mode=mode, found=found), value)
        if self._detectors and pii.may_contain_pii(value):
            lowered = value.lower()
            for det in self._detectors:
                if det.triggers and not any(t in lowered for t in det.triggers):
                    continue
                new = det.regex.sub(functools.partial(self._detector_sub, det=det, found=found), value)
                if new != value:
                    value = new
                    lowered = value.lower()
        return value

    def _rule_sub(self, match: re.Match[str], name: str, mode: str, found: Counter[str]) -> str:
        group = 1 if match.re.groups and match.group(1) else 0
        whole, start, end = match.group(0), match.start(group), match.end(group)
        if start == end:
            return whole
        found[name] += 1
        base = match.start()
        token = self._token(name, match.group(group), mode)
        return whole[: start - base] + token + whole[end - base :]

    def _detector_sub(self, match: re.Match[str], det: Detector, found: Counter[str]) -> str:
        if det.check is not None and not det.check(match):
            return match.group(0)
        for group in _VALUE_GROUPS:
            if group in match.re.groupindex and match.group(group) is not None:
                break
        whole, base = match.group(0), match.start()
        start, end = match.start(group), match.end(group)
        found[det.name] += 1
        token = self._token(det.name, match.group(group), self._builtin_mode)
        return whole[: start - base] + token + whole[end - base :]

    def _header_value(self, name: str, value: str, found: Counter[str]) -> str:
        if self._detectors and name.lower() in SENSITIVE_HEADERS and value:
            found[HEADER_TYPE] += 1
            return self._token(HEADER_TYPE, value, self._builtin_mode)
        return self.text(value, found)

    def _attribute(self, key: str, value: AttributeValue, found: Counter[str]) -> AttributeValue:
        header: Optional[str] = None
        if key.startswith(_HEADER_ATTR_PREFIXES):
            header = key.split(".", 3)[3]
        if isinstance(value, str):
            return self._header_value(header, value, found) if header else self.text(value, found)
        if isinstance(value, tuple) and value and isinstance(value[0], str):
            if header:
                return tuple(self._header_value(header, str(v), found) for v in value)
            return tuple(self.text(str(v), found) for v in value)
        return value

    def _body(self, body: bytes, found: Counter[str]) -> bytes:
        if not body:
            return body
        text = body.decode("utf-8", "surrogateescape")
        new = self.text(text, found)
        return body if new == text else new.encode("utf-8", "surrogateescape")

    def redact_attributes(self, attributes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        """Any attribute map (e.g. a Resource's: process.command_args and process.command_line
        carry whatever a program was started with) redacted like a Call's attributes."""
        found: Counter[str] = Counter()
        out = {k: self._attribute(k, v, found) for k, v in attributes.items()} if self.active else dict(attributes)
        return out, dict(found)

    def redact_text(self, value: str) -> tuple[str, dict[str, int]]:
        found: Counter[str] = Counter()
        return self.text(value, found), dict(found)

    def _attribute_memo(self, key: str, value: AttributeValue, found: Counter[str]) -> AttributeValue:
        """_attribute, remembered per (key, value) for strings and tuples of strings: one dict
        lookup per attribute on the hot path instead of prefix checks, a header-name test and a scan."""
        cls = type(value)
        if cls is not str and not (cls is tuple and value and type(value[0]) is str):  # type: ignore[index]
            return self._attribute(key, value, found)  # numbers, bools: nothing to redact
        memo = self._memo_attrs
        hit = memo.get((key, value))  # type: ignore[arg-type]
        if hit is None:
            local: Counter[str] = Counter()
            hit = (self._attribute(key, value, local), tuple(local.items()))
            if len(value) <= MEMO_VALUE_MAX:  # type: ignore[arg-type]
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[(key, value)] = hit  # type: ignore[index]
        for kind, n in hit[1]:
            found[kind] += n
        return hit[0]

    def is_clean(self, call: Call) -> bool:
        """True when ``apply`` is known to change nothing in ``call`` (every field was seen before
        and needed nothing). False means "not known": ``apply`` decides, and remembers."""
        if not self.active:
            return True
        clean = self._clean_attrs
        last = self._clean_last
        for key, value in call.attributes.items():
            cls = type(value)
            if (cls is str or cls is tuple) and last.get(key) is not value:
                if (key, value) not in clean:
                    return False
                if len(last) >= MEMO_MAX:
                    last.clear()
                last[key] = value
        texts = self._clean_texts
        if call.name and call.name not in texts:
            return False
        if call.status_message and call.status_message not in texts:
            return False
        if call.error_type and call.error_type not in texts:
            return False
        for h in (call.request_headers, call.response_headers):
            if h and not self._headers_clean(h):
                return False
        bodies = self._clean_bodies
        if call.request_body and call.request_body not in bodies:
            return False
        return not call.response_body or call.response_body in bodies

    def _headers_clean(self, headers: tuple[tuple[str, str], ...]) -> bool:
        objs = self._clean_header_objs
        if objs.get(id(headers)) is headers:
            return True
        if headers not in self._clean_headers:
            return False
        if len(objs) >= HEADERS_MEMO_MAX:
            objs.clear()
        objs[id(headers)] = headers
        return True

    def _learn_clean(self, call: Call) -> None:
        """``call`` went through ``apply`` with nothing found: each of its fields needs nothing
        (every field is redacted on its own), so remember them -- the short ones, to bound memory."""
        limit = MEMO_VALUE_MAX
        clean = self._clean_attrs
        for item in call.attributes.items():
            if _short_text(item[1], limit):
                _bounded_add(clean, item, MEMO_MAX)
        for text in (call.name, call.status_message, call.error_type):
            if text and len(text) <= limit:
                _bounded_add(self._clean_texts, text, MEMO_MAX)
        for headers in (call.request_headers, call.response_headers):
            if headers and sum(len(n) + len(v) for n, v in headers) <= HEADERS_MEMO_BYTES:
                _bounded_add(self._clean_headers, headers, HEADERS_MEMO_MAX)
        for body in (call.request_body, call.response_body):
            if body and len(body) <= limit:
                _bounded_add(self._clean_bodies, body, MEMO_MAX)

    def apply(self, call: Call) -> Redacted:
        if not self.active:
            return Redacted(call, (), {})
        if self.is_clean(call):
            return Redacted(call, (), {})
        # No whole-call prefilter (_may_match) here: the memos make every field a lookup, which is
        # cheaper, and real traffic rarely passed it (a Date header's year looks like a card's start).
        found: Counter[str] = Counter()
        attr = self._attribute_memo
        attributes: Attributes = {k: attr(k, v, found) for k, v in call.attributes.items()}
        name = self.text(call.name, found)
        status_message = self.text(call.status_message, found)
        error_type = self.text(call.error_type, found) if call.error_type else call.error_type
        request_headers = tuple((n, self._header_value(n, v, found)) for n, v in call.request_headers)
        response_headers = tuple((n, self._header_value(n, v, found)) for n, v in call.response_headers)
        request_body = self._body(call.request_body, found)
        response_body = self._body(call.response_body, found)
        if not found:  # nothing replaced: the Call as it was, no copy
            self._learn_clean(call)
            return Redacted(call, (), {})
        new = replace(
            call, name=name, status_message=status_message, error_type=error_type, attributes=attributes,
            request_headers=request_headers, response_headers=response_headers, request_body=request_body,
            response_body=response_body,
        )
        types = tuple(sorted(found))
        attributes[PII_TYPES_ATTRIBUTE] = types
        return Redacted(new, types, dict(found))


def _short_text(value: Any, limit: int) -> bool:
    """A str, or a tuple of values, of at most ``limit`` characters (numbers count 8)."""
    if type(value) is str:
        return len(value) <= limit
    if type(value) is tuple:
        return sum(len(v) if type(v) is str else 8 for v in value) <= limit
    return False


def _bounded_add(known: set[Any], item: Any, most: int) -> None:
    if len(known) >= most:
        known.clear()
    known.add(item)


@functools.lru_cache(maxsize=8)
def redactor_for(settings: RedactionSettings, key: bytes) -> Redactor:
    """The Redactor of one settings snapshot (frozen, hashable), compiled once."""
    return Redactor(settings, key)
