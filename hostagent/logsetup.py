"""Logging for the daemon: one format, and library chatter kept to a rate a journal can bear.

The OTLP exporters log every retry of every batch while a collector is down (several lines a
second); the export queue already counts the failures and keeps the last error for
``hostagentctl status``, so those libraries get one line per logger per minute.
"""

from __future__ import annotations

import logging
import sys
import time

RATE_LIMITED = ("opentelemetry.exporter", "opentelemetry.sdk")
INTERVAL_S = 60.0


class RateLimit(logging.Filter):
    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(RATE_LIMITED):
            return True
        now = time.monotonic()
        last = self._last.get(record.name)
        if last is not None and now - last < self.interval_s:
            self.suppressed += 1
            return False
        self._last[record.name] = now
        if self.suppressed:
            record.msg = f"{record.msg} ({self.suppressed} similar messages suppressed)"
            self.suppressed = 0
        return True


def configure(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    limit = RateLimit()  # on the handlers: a logger's own filters do not see its children's records
    for handler in logging.getLogger().handlers:
        handler.addFilter(limit)
