"""InMemoryExporter: the test double for the exporter contract (keeps every span it is given)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class InMemoryExporter(SpanExporter):
    """Records exported spans in order; thread safe (the export worker appends, tests read)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReadableSpan] = []
        self.batches = 0  # export() calls that delivered spans
        self.is_shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.is_shutdown:
            return SpanExportResult.FAILURE
        with self._lock:
            self._spans.extend(spans)
            self.batches += 1
        return SpanExportResult.SUCCESS

    @property
    def spans(self) -> list[ReadableSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def shutdown(self) -> None:
        self.is_shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
