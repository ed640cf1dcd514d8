"""The stages between a kernel event and the export queue, run on the poll thread.

    CaptureEvent -> ConnectionTracker (reassembly, protocol parsers) -> Call
        -> identity (service) -> sampling -> redaction -> SpanBuilder -> tap, metrics
        -> ExportQueue (bounded: the one hand-off to another thread)

Everything here runs on the ring-buffer poll thread and must never block: the export queue
drops and counts when full. Optional stages (sampling, redaction, metrics, tap) are bypassed
when not configured. Every drop has a named counter so ``hostagentctl status`` can show it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Optional, Protocol

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.model import Call, CaptureEvent, EventKind
from hostagent.settings import RuntimeSettings, SettingsHolder

log = logging.getLogger(__name__)

# Call.protocol -> the probe name that enables it ("grpc" is decoded by the http2 probe).
PROBE_OF_PROTOCOL = {
    "http": "http", "http2": "http2", "grpc": "http2", "postgresql": "postgres",
    "mysql": "mysql", "mariadb": "mysql", "redis": "redis", "dns": "dns",
}


class Tracker(Protocol):
    def handle(self, event: CaptureEvent) -> list[Call]: ...


class SpanSink(Protocol):
    def enqueue(self, span: ReadableSpan) -> bool: ...


class Pipeline:
    def __init__(
        self,
        settings: SettingsHolder,
        tracker: Tracker,
        build_span: Callable[[Call], ReadableSpan],
        sink: SpanSink,
        *,
        service_for: Optional[Callable[[Call], Any]] = None,
        on_process_event: Optional[Callable[[CaptureEvent], None]] = None,
        sampler: Optional[Any] = None,
        redactor: Optional[Any] = None,
        observers: tuple[Callable[[Call, ReadableSpan], None], ...] = (),
    ) -> None:
        self.settings = settings
        self.tracker = tracker
        self.build_span = build_span
        self.sink = sink
        self.service_for = service_for
        self.on_process_event = on_process_event
        self.sampler = sampler
        self.redactor = redactor
        self.observers = observers
        self.events = 0
        self.calls = 0
        self.spans = 0
        self.sampled_out = 0
        self.dropped: Counter[str] = Counter()  # cause -> count
        self._errors_logged = 0

    def on_event(self, event: CaptureEvent) -> None:
        """The ring-buffer callback. Exceptions are contained: one bad event never stops capture."""
        self.events += 1
        try:
            if event.kind >= EventKind.EXEC:
                if self.on_process_event is not None:
                    self.on_process_event(event)
            for call in self.tracker.handle(event):
                self.on_call(call)
        except Exception:  # a bug must cost one event, not the agent
            self.dropped["pipeline_error"] += 1
            if self._errors_logged < 20:
                self._errors_logged += 1
                log.exception("pipeline error on %s event of pid %d (dropped)", event.kind.name, event.pid)

    def on_call(self, call: Call) -> None:
        self.calls += 1
        current: RuntimeSettings = self.settings.current
        probe = PROBE_OF_PROTOCOL.get(call.protocol, call.protocol)
        if probe not in current.probes:
            self.dropped["probe_disabled"] += 1
            return
        if self.service_for is not None:
            call = replace(call, service=self.service_for(call))
        if self.redactor is not None:
            call = self.redactor.apply(call, current)
        span = self.build_span(call)
        if self.sampler is not None and not self.sampler.keep(call, span, current):
            self.sampled_out += 1  # a decision, not a loss: counted apart from drops
            return
        self.spans += 1
        for observe in self.observers:
            observe(call, span)
        if not self.sink.enqueue(span):
            self.dropped["export_queue_full"] += 1
