"""The audit trail: one line per change made through the admin API -- who, what, old -> new.

Each line goes to the ``hostagent.audit`` logger (journald in production) and is appended, as
one JSON object, to ``<state_dir>/audit.log`` (opened O_APPEND, mode 0600, one write per line,
so lines from concurrent requests never interleave).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("hostagent.audit")
AUDIT_FILE = "audit.log"


class AuditLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, who: str, action: str, old: Any, new: Any, ok: bool = True, error: str = "") -> None:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
            "who": who,
            "action": action,
            "old": old,
            "new": new,
            "ok": ok,
        }
        if error:
            entry["error"] = error
        line = json.dumps(entry, sort_keys=True, default=str)
        if ok:
            log.info("%s %s: %s -> %s", who, action, json.dumps(old, default=str), json.dumps(new, default=str))
        else:
            log.warning("%s %s refused: %s", who, action, error)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)
