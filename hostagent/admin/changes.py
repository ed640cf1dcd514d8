"""The runtime changes the admin API can make, as pure functions: settings in, settings out.

Each checks its input completely before building anything, so a refused request changes
nothing. Refusals raise ``ChangeError`` with the gRPC status name to answer with.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from hostagent.policy.rules import MAX_RULES, MODES, RuleError, compile_rule
from hostagent.policy.sampling import KNOWN_PROTOCOLS, validate_ratio
from hostagent.settings import (
    CaptureOverride,
    CaptureSettings,
    RedactionRule,
    RedactionSettings,
    SamplingSettings,
)

MAX_OVERRIDES = 256
MAX_SERVICE_NAME = 255
MAX_SLOW_MS = 86_400_000.0  # one day
MAX_BODY_BYTES = 1 << 20  # the config file's limit too ([capture] body_max_bytes)
ANY = "*"


class ChangeError(ValueError):
    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code  # a grpc.StatusCode name


def set_probe(probes: frozenset[str], name: str, enabled: bool, valid: tuple[str, ...]) -> frozenset[str]:
    if name not in valid:
        raise ChangeError(f"unknown probe {name[:64]!r}; valid probes: {', '.join(valid)}")
    return probes | {name} if enabled else probes - {name}


def _set_override(
    overrides: tuple[tuple[str, float], ...], name: str, ratio: Optional[float]
) -> tuple[tuple[str, float], ...]:
    kept = tuple((n, r) for n, r in overrides if n != name)
    return kept if ratio is None else (*kept, (name, ratio))


def set_sampling(
    current: SamplingSettings,
    *,
    ratio: Optional[float] = None,
    service: str = "",
    protocol: str = "",
    clear_override: bool = False,
    keep_errors: Optional[bool] = None,
    keep_slower_than_ms: Optional[float] = None,
) -> SamplingSettings:
    if service and protocol:
        raise ChangeError("give a service or a protocol override, not both")
    if ratio is not None:
        try:
            validate_ratio(ratio)
        except ValueError as exc:
            raise ChangeError(str(exc)) from None
    if clear_override and not (service or protocol):
        raise ChangeError("clear_override needs a service or a protocol")
    _check_service(service)
    if protocol and protocol not in KNOWN_PROTOCOLS:
        raise ChangeError(f"unknown protocol {protocol[:64]!r}; valid protocols: {', '.join(KNOWN_PROTOCOLS)}")
    if keep_slower_than_ms is not None and (
        math.isnan(keep_slower_than_ms) or not 0 <= keep_slower_than_ms <= MAX_SLOW_MS
    ):
        raise ChangeError(f"keep_slower_than_ms must be between 0 and {MAX_SLOW_MS:.0f}, got {keep_slower_than_ms}")
    if ratio is None and not clear_override and keep_errors is None and keep_slower_than_ms is None:
        raise ChangeError("nothing to change: give a ratio, keep_errors or keep_slower_than_ms")
    if ratio is not None and clear_override:
        raise ChangeError("give a ratio or clear_override, not both")
    new = current
    if service and (ratio is not None or clear_override):
        per_service = _set_override(current.per_service, service, None if clear_override else ratio)
        if len(per_service) > MAX_OVERRIDES:
            raise ChangeError(f"at most {MAX_OVERRIDES} per-service overrides")
        new = replace(new, per_service=per_service)
    elif protocol and (ratio is not None or clear_override):
        new = replace(
            new, per_protocol=_set_override(current.per_protocol, protocol, None if clear_override else ratio)
        )
    elif ratio is not None:
        new = replace(new, ratio=float(ratio))
    if keep_errors is not None:
        new = replace(new, keep_errors=keep_errors)
    if keep_slower_than_ms is not None:
        new = replace(new, keep_slower_than_ms=keep_slower_than_ms or None)
    return new


def add_rule(current: RedactionSettings, rule: RedactionRule) -> RedactionSettings:
    try:
        compile_rule(rule)
    except RuleError as exc:
        raise ChangeError(str(exc)) from None
    if any(r.name == rule.name for r in current.rules):
        raise ChangeError(f"a redaction rule named {rule.name!r} already exists", "ALREADY_EXISTS")
    if len(current.rules) >= MAX_RULES:
        raise ChangeError(f"at most {MAX_RULES} redaction rules")
    return replace(current, rules=(*current.rules, rule))


def remove_rule(current: RedactionSettings, name: str) -> RedactionSettings:
    if not any(r.name == name for r in current.rules):
        names = ", ".join(r.name for r in current.rules) or "none"
        raise ChangeError(f"no redaction rule named {name[:64]!r} (rules: {names})", "NOT_FOUND")
    return replace(current, rules=tuple(r for r in current.rules if r.name != name))


def set_pii(current: RedactionSettings, enabled: bool, mode: str = "") -> RedactionSettings:
    if mode and mode not in MODES:
        raise ChangeError(f"mode must be one of {', '.join(MODES)}, got {mode[:40]!r}")
    return replace(current, pii_detection=enabled, mode=mode or current.mode)


def _check_service(service: str) -> None:
    if service and (len(service) > MAX_SERVICE_NAME or not service.isprintable()):
        raise ChangeError(f"service name must be 1-{MAX_SERVICE_NAME} printable characters")


def _check_protocol(protocol: str) -> None:
    if protocol and protocol != ANY and protocol not in KNOWN_PROTOCOLS:
        raise ChangeError(f"unknown protocol {protocol[:64]!r}; valid protocols: {', '.join(KNOWN_PROTOCOLS)}")


def set_capture(
    current: CaptureSettings,
    *,
    headers: Optional[bool] = None,
    bodies: Optional[bool] = None,
    body_max_bytes: Optional[int] = None,
    raw_sql: Optional[bool] = None,
    service: str = "",
    protocol: str = "",
    clear_override: bool = False,
) -> CaptureSettings:
    """Change the base capture values, or the override for ``service`` and/or ``protocol``.

    An override that is changed moves to the end of the list: overrides apply in order and later
    ones win (hostagent.traces.wire.capture_for), so the one just set is the one that takes
    effect -- what a person typing the command expects. Fields not given keep their values.
    """
    _check_service(service)
    _check_protocol(protocol)
    if body_max_bytes is not None and not 0 <= body_max_bytes <= MAX_BODY_BYTES:
        raise ChangeError(f"body_max_bytes must be between 0 and {MAX_BODY_BYTES}, got {body_max_bytes}")
    scoped = (service or ANY, protocol or ANY) != (ANY, ANY)
    if clear_override:
        if not scoped:
            raise ChangeError("clear_override needs a service or a protocol")
        if (headers, bodies, body_max_bytes, raw_sql) != (None, None, None, None):
            raise ChangeError("give values to set or clear_override, not both")
    elif headers is None and bodies is None and body_max_bytes is None and raw_sql is None:
        raise ChangeError("nothing to change: give headers, bodies, body_max_bytes or raw_sql")
    if scoped and raw_sql is not None:
        raise ChangeError("raw_sql applies to every service and protocol; give it without service/protocol")
    if not scoped:
        return replace(
            current,
            headers=current.headers if headers is None else headers,
            bodies=current.bodies if bodies is None else bodies,
            body_max_bytes=current.body_max_bytes if body_max_bytes is None else body_max_bytes,
            raw_sql=current.raw_sql if raw_sql is None else raw_sql,
        )
    key = (service or ANY, protocol or ANY)
    found = [o for o in current.overrides if (o.service, o.protocol) == key]
    kept = tuple(o for o in current.overrides if (o.service, o.protocol) != key)
    if clear_override:
        if not found:
            listed = ", ".join(f"{o.service}/{o.protocol}" for o in current.overrides) or "none"
            raise ChangeError(f"no capture override for {key[0][:64]}/{key[1]} (overrides: {listed})", "NOT_FOUND")
        return replace(current, overrides=kept)
    old = found[-1] if found else CaptureOverride(service=key[0], protocol=key[1])
    new = replace(
        old,
        headers=old.headers if headers is None else headers,
        bodies=old.bodies if bodies is None else bodies,
        body_max_bytes=old.body_max_bytes if body_max_bytes is None else body_max_bytes,
    )
    if len(kept) >= MAX_OVERRIDES:
        raise ChangeError(f"at most {MAX_OVERRIDES} capture overrides")
    return replace(current, overrides=(*kept, new))


def validate_capture(c: CaptureSettings) -> None:
    """Raise ChangeError when stored capture settings are not ones set_capture could make."""
    if not 0 <= c.body_max_bytes <= MAX_BODY_BYTES:
        raise ChangeError(f"body_max_bytes {c.body_max_bytes} out of range")
    if len(c.overrides) > MAX_OVERRIDES:
        raise ChangeError(f"more than {MAX_OVERRIDES} capture overrides")
    for o in c.overrides:
        _check_service("" if o.service == ANY else o.service)
        _check_protocol(o.protocol)
        if o.body_max_bytes is not None and not 0 <= o.body_max_bytes <= MAX_BODY_BYTES:
            raise ChangeError(f"override {o.service}/{o.protocol}: body_max_bytes {o.body_max_bytes} out of range")
