"""Runtime changes that survive a restart: ``<state_dir>/runtime.json``.

Only the sections changed through the admin API are stored (probes, sampling, redaction,
capture), each whole. On start (and on reload) they are laid over the config file's values, so a section nobody
touched at runtime keeps following the config file. ``reset`` deletes the file.

Writes are atomic (temporary file, fsync, rename): a crash leaves the old file or the new one.
A file that cannot be read is set aside as ``runtime.json.bad`` and ignored, with a warning:
a broken state file must not keep the agent from starting.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from hostagent.settings import (
    CaptureOverride,
    CaptureSettings,
    RedactionRule,
    RedactionSettings,
    RuntimeSettings,
    SamplingSettings,
)

log = logging.getLogger(__name__)
STATE_FILE = "runtime.json"
FORMAT = 1
SECTIONS = ("probes", "sampling", "redaction", "capture")


@dataclass(frozen=True)
class RuntimeOverrides:
    probes: Optional[frozenset[str]] = None
    sampling: Optional[SamplingSettings] = None
    redaction: Optional[RedactionSettings] = None
    capture: Optional[CaptureSettings] = None

    @property
    def sections(self) -> tuple[str, ...]:
        return tuple(name for name in SECTIONS if getattr(self, name) is not None)

    def apply(self, base: RuntimeSettings) -> RuntimeSettings:
        """``base`` (the config file's values) with the stored sections laid over it."""
        return replace(
            base,
            probes=base.probes if self.probes is None else self.probes,
            sampling=base.sampling if self.sampling is None else self.sampling,
            redaction=base.redaction if self.redaction is None else self.redaction,
            capture=base.capture if self.capture is None else self.capture,
        )

    def with_section(self, section: str, settings: RuntimeSettings) -> RuntimeOverrides:
        """These overrides plus ``section`` taken from ``settings``."""
        if section not in SECTIONS:
            raise ValueError(f"unknown section {section!r}")
        return replace(self, **{section: getattr(settings, section)})


def to_json(ov: RuntimeOverrides) -> dict[str, Any]:
    doc: dict[str, Any] = {"format": FORMAT}
    if ov.probes is not None:
        doc["probes"] = sorted(ov.probes)
    if ov.sampling is not None:
        s = ov.sampling
        doc["sampling"] = {
            "ratio": s.ratio,
            "per_service": [[n, r] for n, r in s.per_service],
            "per_protocol": [[n, r] for n, r in s.per_protocol],
            "keep_errors": s.keep_errors,
            "keep_slower_than_ms": s.keep_slower_than_ms,
        }
    if ov.redaction is not None:
        r = ov.redaction
        doc["redaction"] = {
            "pii_detection": r.pii_detection,
            "mode": r.mode,
            "rules": [{"name": x.name, "pattern": x.pattern, "mode": x.mode} for x in r.rules],
        }
    if ov.capture is not None:
        doc["capture"] = capture_to_json(ov.capture)
    return doc


def capture_to_json(c: CaptureSettings) -> dict[str, Any]:
    """Also the audit lines' form. Override fields that are unset (None) are left out."""
    return {
        "headers": c.headers,
        "bodies": c.bodies,
        "body_max_bytes": c.body_max_bytes,
        "raw_sql": c.raw_sql,
        "overrides": [
            {k: v for k, v in (("service", o.service), ("protocol", o.protocol), ("headers", o.headers),
                               ("bodies", o.bodies), ("body_max_bytes", o.body_max_bytes)) if v is not None}
            for o in c.overrides
        ],
    }


def _flag(value: Any) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    raise TypeError(f"expected true, false or null, got {value!r}")


def _size(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _required(value: Optional[bool], name: str) -> bool:
    if value is None:
        raise TypeError(f"capture.{name} must be true or false")
    return value


def capture_from_json(c: Any) -> CaptureSettings:
    size = _size(c["body_max_bytes"])
    if size is None:
        raise TypeError("capture.body_max_bytes must be an integer")
    return CaptureSettings(
        headers=_required(_flag(c["headers"]), "headers"),
        bodies=_required(_flag(c["bodies"]), "bodies"),
        body_max_bytes=size,
        raw_sql=_required(_flag(c.get("raw_sql", False)), "raw_sql"),
        overrides=tuple(
            CaptureOverride(
                service=str(o.get("service", "*")),
                protocol=str(o.get("protocol", "*")),
                headers=_flag(o.get("headers")),
                bodies=_flag(o.get("bodies")),
                body_max_bytes=_size(o.get("body_max_bytes")),
            )
            for o in c.get("overrides", [])
        ),
    )


def from_json(doc: Any) -> RuntimeOverrides:
    """Parse a stored document; raises ValueError/TypeError/KeyError when it is malformed."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} runtime state document")
    probes = sampling = redaction = capture = None
    if "probes" in doc:
        probes = frozenset(str(p) for p in doc["probes"])
    if "sampling" in doc:
        s = doc["sampling"]
        slow = s.get("keep_slower_than_ms")
        sampling = SamplingSettings(
            ratio=float(s["ratio"]),
            per_service=tuple((str(n), float(r)) for n, r in s.get("per_service", [])),
            per_protocol=tuple((str(n), float(r)) for n, r in s.get("per_protocol", [])),
            keep_errors=bool(s.get("keep_errors", False)),
            keep_slower_than_ms=None if slow is None else float(slow),
        )
    if "redaction" in doc:
        r = doc["redaction"]
        redaction = RedactionSettings(
            pii_detection=bool(r["pii_detection"]),
            mode=str(r["mode"]),
            rules=tuple(
                RedactionRule(str(x["name"]), str(x["pattern"]), str(x.get("mode", "redact")))
                for x in r.get("rules", [])
            ),
        )
    if "capture" in doc:
        capture = capture_from_json(doc["capture"])
    return RuntimeOverrides(probes, sampling, redaction, capture)


class StateStore:
    def __init__(self, state_dir: Path | str) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE

    def load(self) -> RuntimeOverrides:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return RuntimeOverrides()
        try:
            return from_json(json.loads(raw))
        except (ValueError, TypeError, KeyError) as exc:
            bad = self.path.with_name(STATE_FILE + ".bad")
            os.replace(self.path, bad)
            log.warning("ignoring runtime state %s (moved to %s): %s", self.path, bad, exc)
            return RuntimeOverrides()

    def save(self, overrides: RuntimeOverrides) -> None:
        if not overrides.sections:
            self.clear()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        data = json.dumps(to_json(overrides), indent=2, sort_keys=True).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:  # make the rename itself durable
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def load_runtime_settings(state_dir: Path | str, base: RuntimeSettings) -> RuntimeSettings:
    """What the daemon should start with: the config's values plus the stored runtime changes."""
    return StateStore(state_dir).load().apply(base)
