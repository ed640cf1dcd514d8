"""The agent's own health as metrics: what it dropped (by cause) and what it exported.

Counters are observed, not incremented: each stage already keeps its own counts (ExportQueue,
ring-buffer lost events, parser resyncs...), so the callbacks read them at collection time and
the hot paths pay nothing.

    hostagent.dropped{cause="queue_full"|"export_failed"|"shutdown"|...}   monotonic counter
    hostagent.spans.exported                                                monotonic counter
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Callable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

import hostagent
from hostagent.export.queue import ExportQueue

CountSource = Callable[[], int]


class SelfMetrics:
    def __init__(self, meter_provider: MeterProvider) -> None:
        self._lock = threading.Lock()
        self._drops: dict[str, CountSource] = {}
        self._exported: list[CountSource] = []
        meter = meter_provider.get_meter("hostagent", hostagent.__version__)
        meter.create_observable_counter(
            "hostagent.dropped",
            callbacks=[self._observe_drops],
            unit="{item}",
            description="Items (events, calls, spans) the agent dropped, by cause.",
        )
        meter.create_observable_counter(
            "hostagent.spans.exported",
            callbacks=[self._observe_exported],
            unit="{span}",
            description="Spans every exporter accepted.",
        )

    def register_drops(self, cause: str, source: CountSource) -> None:
        """Report ``source()`` (a cumulative count) as hostagent.dropped{cause=cause}."""
        with self._lock:
            self._drops[cause] = source

    def watch_queue(self, queue: ExportQueue) -> None:
        """Report an ExportQueue's drop causes and exported count."""
        self.register_drops("queue_full", lambda: queue.stats().dropped_queue_full)
        self.register_drops("export_failed", lambda: queue.stats().dropped_export_failed)
        self.register_drops("shutdown", lambda: queue.stats().dropped_shutdown)
        with self._lock:
            self._exported.append(lambda: queue.stats().exported)

    def _observe_drops(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sources = list(self._drops.items())
        return [Observation(source(), {"cause": cause}) for cause, source in sources]

    def _observe_exported(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sources = list(self._exported)
        return [Observation(sum(source() for source in sources))]
