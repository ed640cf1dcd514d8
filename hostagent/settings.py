"""RuntimeSettings: the one source of truth for what can change while the agent runs.

The config file gives the initial values; the admin API changes them; every stage reads
``holder.current`` (an immutable snapshot) on its hot path, with no lock: a change builds a new
snapshot and swaps the reference, so a reader sees either the old or the new settings, whole.
``current`` is a plain attribute, not a property: read once or twice per span from compiled
stages, a property is an interpreted call each time. Only ``update`` assigns it.
Subscribers (probe attach/detach, the BPF sampling map) are called after each swap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Optional


@dataclass(frozen=True)
class SamplingSettings:
    ratio: float = 1.0  # global, 0.0-1.0, trace-id ratio based and parent based
    per_service: tuple[tuple[str, float], ...] = ()  # (service.name, ratio) overrides
    per_protocol: tuple[tuple[str, float], ...] = ()  # (protocol, ratio) overrides
    keep_errors: bool = False  # always keep calls whose span status is ERROR
    keep_slower_than_ms: Optional[float] = None  # always keep calls at least this slow


@dataclass(frozen=True)
class RedactionRule:
    name: str
    pattern: str  # Python regular expression
    mode: str = "redact"  # "redact" -> [REDACTED:name]; "hash" -> keyed hash


@dataclass(frozen=True)
class RedactionSettings:
    pii_detection: bool = True  # built-in detectors (email, card, bearer/JWT, url passwords, headers)
    mode: str = "redact"  # mode of the built-in detectors
    rules: tuple[RedactionRule, ...] = ()


@dataclass(frozen=True)
class CaptureOverride:
    """Capture settings for one service and/or protocol ("*" = any); None keeps the base value."""

    service: str = "*"
    protocol: str = "*"
    headers: Optional[bool] = None
    bodies: Optional[bool] = None
    body_max_bytes: Optional[int] = None


@dataclass(frozen=True)
class CaptureSettings:
    """What wire detail spans carry (issue 9); defaults are safe."""

    headers: bool = True
    bodies: bool = False
    body_max_bytes: int = 1024
    raw_sql: bool = False  # keep db.query.text unsanitised
    # Applied in order, later ones win (hostagent.traces.wire.capture_for).
    overrides: tuple[CaptureOverride, ...] = ()


@dataclass(frozen=True)
class RuntimeSettings:
    probes: frozenset[str] = frozenset({"http"})
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    generation: int = 0  # bumps on every change


Listener = Callable[[RuntimeSettings, RuntimeSettings], None]  # (old, new)


class SettingsHolder:
    def __init__(self, initial: RuntimeSettings) -> None:
        self.current = initial  # read-only outside ``update``
        self._lock = threading.Lock()  # serialises writers only
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, change: Callable[[RuntimeSettings], RuntimeSettings]) -> RuntimeSettings:
        """Apply ``change`` to the current snapshot, swap it in, notify listeners."""
        with self._lock:
            old = self.current
            new = replace(change(old), generation=old.generation + 1)
            self.current = new
        for listener in list(self._listeners):
            listener(old, new)
        return new
