"""Validation of user redaction rules: refuse what would hurt the agent before it is applied.

A rule runs on every captured string of every call, so a bad one costs everything: it must
compile, stay small (4 KiB pattern), not match the empty string (it would "redact" between every
character), and have no nested unbounded quantifier such as ``(a+)+`` or ``(.*)*`` -- the shape
behind catastrophic backtracking, found cheaply by walking the parsed pattern.
"""

from __future__ import annotations

import re
from typing import Any

from hostagent.settings import RedactionRule

try:  # Python 3.11+: the regex parser moved; same API.
    import re._parser as _sre_parse  # type: ignore[import-not-found]
    from re._constants import MAXREPEAT as _MAXREPEAT  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_parse as _sre_parse  # type: ignore[no-redef]
    from sre_constants import MAXREPEAT as _MAXREPEAT  # type: ignore[no-redef]

MAX_PATTERN_BYTES = 4096
MAX_RULES = 64
MODES = ("redact", "hash")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class RuleError(ValueError):
    """Why a rule was refused, worded for the user."""


def _unbounded(op: Any, arg: Any) -> bool:
    return str(op) in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and arg[1] == _MAXREPEAT


def _walk(items: Any, inside_unbounded: bool) -> bool:
    """True when an unbounded repeat sits inside another unbounded repeat."""
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            unbounded = _unbounded(op, arg)
            if unbounded and inside_unbounded:
                return True
            if _walk(arg[2], inside_unbounded or unbounded):
                return True
        elif name == "SUBPATTERN":
            if _walk(arg[-1], inside_unbounded):
                return True
        elif name == "BRANCH":
            if any(_walk(branch, inside_unbounded) for branch in arg[1]):
                return True
        elif name in ("ASSERT", "ASSERT_NOT"):
            if _walk(arg[1], inside_unbounded):
                return True
    return False


def has_nested_quantifier(pattern: str) -> bool:
    return _walk(_sre_parse.parse(pattern), False)


def compile_rule(rule: RedactionRule) -> re.Pattern[str]:
    """Check one rule and return its compiled pattern; raise RuleError saying what is wrong."""
    if not _NAME.fullmatch(rule.name or ""):
        raise RuleError(
            f"rule name {rule.name[:80]!r} is invalid: use 1-64 characters of letters, digits, '_', '.', '-'"
        )
    if rule.mode not in MODES:
        raise RuleError(f"rule {rule.name}: mode must be one of {', '.join(MODES)}, got {rule.mode[:40]!r}")
    size = len(rule.pattern.encode("utf-8", "surrogatepass"))
    if size > MAX_PATTERN_BYTES:
        raise RuleError(f"rule {rule.name}: pattern is {size} bytes; the limit is {MAX_PATTERN_BYTES}")
    if not rule.pattern:
        raise RuleError(f"rule {rule.name}: pattern is empty")
    try:
        compiled = re.compile(rule.pattern)
    except re.error as exc:
        raise RuleError(f"rule {rule.name}: invalid regular expression: {exc}") from None
    except (RecursionError, OverflowError) as exc:  # absurd nesting or repeat counts
        raise RuleError(f"rule {rule.name}: pattern too complex: {exc}") from None
    if compiled.fullmatch(""):
        raise RuleError(f"rule {rule.name}: pattern matches the empty string")
    if has_nested_quantifier(rule.pattern):
        raise RuleError(
            f"rule {rule.name}: nested unbounded quantifiers (like (a+)+ or (.*)*) can backtrack "
            "catastrophically; rewrite the pattern without them"
        )
    return compiled


def validate_rules(rules: tuple[RedactionRule, ...]) -> None:
    """The whole set: each rule valid, names unique, at most MAX_RULES."""
    if len(rules) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} redaction rules, got {len(rules)}")
    seen: set[str] = set()
    for rule in rules:
        compile_rule(rule)
        if rule.name in seen:
            raise RuleError(f"rule {rule.name}: a rule with that name already exists")
        seen.add(rule.name)
