"""ExportQueue: the bounded hand-off between span building and the exporters.

The producer (the pipeline thread) must never wait on the network, so ``put`` never blocks:
when the queue is full the span is dropped and counted. One worker thread wakes when a batch is
full or after ``delay_s``, and sends batches to every exporter in turn.

A batch is at most ``batch_size`` spans, and at low rates fewer: about ``slice_s`` worth of the
recent span rate (never under ``min_slice``), so the collector gets a batch every ~25 ms instead
of 512 spans at once every ~100 ms. A collector on the same host parses a batch in one go at
normal priority; with Flask at ~2.9k requests/s (5.8k spans/s) the bench's stand-in collector
ran 1-2 ms per 512-span batch on the load generator's CPU, stalling it, and the app's p99 was
3.0-3.7 ms against 2.4-2.5 with 128-span batches (bench/README, twenty-sixth round). Each export
call costs the worker ~0.3 ms of its own, so at high rates (where the agent is short of CPU)
the batches stay at ``batch_size``, and a backlog is always sent in full batches.

Failure handling: an exporter's own retries (OTLP: backoff on UNAVAILABLE, bounded by its
timeout) come first. When an exporter still fails, the worker retries that batch on that exporter
``max_retries`` more times, with a growing pause, then gives up and counts the spans as
``dropped_export_failed``. While it waits, new spans keep queueing (and are dropped, counted,
when the queue is full), so a dead collector costs bounded memory and never blocks capture; when
the collector is back the next attempt succeeds and export resumes by itself.

Accounting -- nothing is lost silently:
    enqueued == exported + dropped_export_failed + dropped_shutdown + still queued or in flight
and every span offered to ``put`` is either enqueued or dropped_queue_full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)


class ExportLost(Exception):
    """Raised by an exporter whose batch is gone for good (hostagent.export.process: the export
    process died holding it, and may have sent it): counted as failed at once, never retried."""


@dataclass(frozen=True)
class ExportStats:
    """A snapshot of the queue's counters (for status, metrics and tests)."""

    enqueued: int
    exported: int  # spans every exporter accepted
    dropped_queue_full: int
    dropped_export_failed: int  # spans at least one exporter never accepted
    dropped_shutdown: int  # still queued when shutdown's time ran out
    queued: int
    failed_attempts: int  # export() calls that failed (each retry counts)
    last_error: str
    last_success: Optional[float]  # Unix time of the last successful export


class ExportQueue:
    def __init__(
        self,
        exporters: Sequence[SpanExporter],
        max_queue: int = 8192,
        batch_size: int = 512,
        delay_s: float = 0.5,
        slice_s: float = 0.025,
        min_slice: int = 128,
        max_retries: int = 2,
        retry_pause_s: float = 1.0,
        name: str = "span-export",
    ) -> None:
        if not exporters:
            raise ValueError("ExportQueue needs at least one exporter")
        self._exporters = list(exporters)
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._delay_s = delay_s
        self._slice_s = slice_s
        self._min_slice = min(min_slice, batch_size)
        # the batch size in use (the worker's wake-up threshold too): ``batch_size`` until a rate
        # has been measured, then ``slice_s`` of it within [min_slice, batch_size]
        self._slice = batch_size
        self._rate_mark = (time.monotonic(), 0)  # (when, enqueued then): the rate's window
        self._max_retries = max_retries
        self._retry_pause_s = retry_pause_s
        self._queue: deque[ReadableSpan] = deque()  # append/popleft are atomic: no lock needed
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # ``_stopping.is_set()`` as a plain bool for ``put`` (per span: Event.is_set is an
        # interpreted call); set with it, by ``shutdown`` only
        self._stopped = False
        self._deadline: Optional[float] = None  # monotonic; set by shutdown
        self._counts_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_waiters: list[threading.Event] = []
        self._in_flight = 0
        self._enqueued = 0
        self._exported = 0
        self._dropped_full = 0
        self._dropped_failed = 0
        self._dropped_shutdown = 0
        self._failed_attempts = 0
        self._last_error = ""
        self._last_success: Optional[float] = None
        self._beat = time.monotonic()  # the worker's last wake or batch done (overdue_s)
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    # -- producer side -------------------------------------------------------------------------

    def start(self) -> ExportQueue:
        if not self._started:
            self._started = True
            self._worker.start()
        return self

    def put(self, span: ReadableSpan) -> bool:
        """Queue one span; False (and counted) when full or shut down. Never blocks."""
        if len(self._queue) >= self._max_queue or self._stopped:
            with self._counts_lock:
                self._dropped_full += 1
            return False
        self._queue.append(span)
        with self._counts_lock:
            self._enqueued += 1
        if len(self._queue) >= self._slice and not self._wake.is_set():
            self._wake.set()
        return True

    def put_many(self, spans: Iterable[ReadableSpan]) -> int:
        """Queue several spans; returns how many were accepted."""
        return sum(1 for span in spans if self.put(span))

    # -- control -------------------------------------------------------------------------------

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export everything queued now; True when done within ``timeout_s``."""
        if not self._started or not self._worker.is_alive():
            return not self._queue
        done = threading.Event()
        with self._flush_lock:
            self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Stop accepting, export what is queued (waiting at most ``timeout_s``), shut exporters.

        Spans still queued when the time is up are counted as ``dropped_shutdown``. True when
        everything queued was handled (exported or counted as failed) in time.
        """
        self._deadline = time.monotonic() + timeout_s
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        clean = True
        if self._started:
            self._worker.join(timeout_s)
            if self._worker.is_alive():
                # An export is stuck on the network: shutting the exporters down aborts their
                # retry backoff and closes the channel, which ends the call.
                clean = False
                self._shutdown_exporters()
                self._worker.join(2.0)
        leftover = 0
        while self._queue:
            try:
                self._queue.popleft()
            except IndexError:
                break
            leftover += 1
        with self._counts_lock:
            self._dropped_shutdown += leftover
        if leftover:
            clean = False
            log.warning("export queue shut down with %d spans not exported", leftover)
        self._shutdown_exporters()
        return clean

    def stats(self) -> ExportStats:
        with self._counts_lock:
            return ExportStats(
                enqueued=self._enqueued,
                exported=self._exported,
                dropped_queue_full=self._dropped_full,
                dropped_export_failed=self._dropped_failed,
                dropped_shutdown=self._dropped_shutdown,
                queued=len(self._queue) + self._in_flight,
                failed_attempts=self._failed_attempts,
                last_error=self._last_error,
                last_success=self._last_success,
            )

    # -- worker --------------------------------------------------------------------------------

    def overdue_s(self, now: float) -> float:
        """How long queued spans have waited past the worker's next due wake (0 when none wait or
        a batch is on its way: a slow collector is not the agent starved; hostagent.starvation)."""
        if not self._queue or self._in_flight:
            return 0.0
        return max(0.0, now - self._beat - self._delay_s)

    def _shutdown_exporters(self) -> None:
        for exporter in self._exporters:
            try:
                exporter.shutdown()
            except Exception:  # one broken exporter must not stop the others' shutdown
                log.exception("exporter %r failed to shut down", exporter)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._beat = time.monotonic()
            self._wake.clear()
            self._resize(self._beat)
            with self._flush_lock:
                waiters, self._flush_waiters = self._flush_waiters, []
            self._drain()
            for waiter in waiters:
                waiter.set()
            if self._stopping.is_set():
                # A put() that passed its check just before shutdown may have appended since.
                self._drain()
                return

    def _resize(self, now: float) -> None:
        """The batch size from the span rate of the last quarter second or more."""
        since, count = self._rate_mark
        if now - since < 0.25:
            return
        enqueued = self._enqueued
        self._rate_mark = (now, enqueued)
        wanted = int((enqueued - count) / (now - since) * self._slice_s)
        self._slice = max(self._min_slice, min(self._batch_size, wanted))

    @property
    def batch_now(self) -> int:
        """The batch size in use (for tests)."""
        return self._slice

    def _drain(self) -> None:
        """Export batches until the queue is empty (or shutdown's time is up): slices of the
        current size, or full batches while a backlog of more than a full batch waits."""
        while self._queue and not self._past_deadline():
            size = self._batch_size if len(self._queue) > self._batch_size else self._slice
            batch: list[ReadableSpan] = []
            while len(batch) < size:
                try:
                    batch.append(self._queue.popleft())
                except IndexError:
                    break
            self._in_flight = len(batch)
            delivered = all([self._deliver(exporter, batch) for exporter in self._exporters])
            self._beat = time.monotonic()
            with self._counts_lock:
                self._in_flight = 0
                if delivered:
                    self._exported += len(batch)
                else:
                    self._dropped_failed += len(batch)
            if not delivered and not self._stopping.is_set() and len(self._queue) < self._batch_size:
                # Failing and not much waiting: do not spin on a dead collector.
                return

    def _deliver(self, exporter: SpanExporter, batch: list[ReadableSpan]) -> bool:
        for attempt in range(self._max_retries + 1):
            try:
                result = exporter.export(batch)
                error = "" if result == SpanExportResult.SUCCESS else f"{type(exporter).__name__}: {result.name}"
            except ExportLost as lost:  # its own name: mypyc types a name by its first binding
                with self._counts_lock:
                    self._failed_attempts += 1
                    self._last_error = f"{type(exporter).__name__}: {lost}"
                break
            except Exception as exc:  # an exporter bug must not kill the worker
                error = f"{type(exporter).__name__}: {exc!r}"
            if not error:
                with self._counts_lock:
                    self._last_success = time.time()
                return True
            with self._counts_lock:
                self._failed_attempts += 1
                self._last_error = error
            if attempt == self._max_retries or self._past_deadline():
                break
            pause = self._retry_pause_s * (2**attempt)
            if self._deadline is not None:
                pause = min(pause, max(0.0, self._deadline - time.monotonic()))
            if self._stopping.wait(pause) and self._past_deadline():
                break
        log.warning("dropping %d spans: %s", len(batch), self._last_error)
        return False
