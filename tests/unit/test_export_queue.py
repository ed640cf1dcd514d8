"""ExportQueue: bounded, never blocks, counts every drop, flushes on shutdown, recovers."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext

from hostagent.export.memory import InMemoryExporter
from hostagent.export.queue import ExportLost, ExportQueue
from tests.support.otlp_receiver import wait_until

RESOURCE = Resource({"service.name": "t"})


def span(i: int) -> ReadableSpan:
    return ReadableSpan(
        name=f"s{i}",
        context=SpanContext(1, i + 1, is_remote=False),
        resource=RESOURCE,
        start_time=i,
        end_time=i,
    )


class FlakyExporterMock(SpanExporter):
    """Stands in for a collector that fails: FAILURE (or raises) while ``failing`` is set."""

    def __init__(self, raise_instead: bool = False) -> None:
        self.failing = threading.Event()
        self.raise_instead = raise_instead
        self.delivered: list[ReadableSpan] = []
        self.attempts = 0
        self.shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.attempts += 1
        if self.failing.is_set():
            if self.raise_instead:
                raise ConnectionError("collector down")
            return SpanExportResult.FAILURE
        self.delivered.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.shut = True


class BlockingExporterMock(SpanExporter):
    """Stands in for a collector that hangs: export blocks until released or shut down."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()  # like the OTLP exporter: shutdown aborts the call in progress


def test_batches_by_size_and_exports_in_order() -> None:
    memory = InMemoryExporter()
    queue = ExportQueue([memory], batch_size=100, delay_s=30).start()  # delay too long to matter
    queue.put_many(span(i) for i in range(250))
    assert wait_until(lambda: len(memory.spans) >= 200, 5)
    assert [s.name for s in memory.spans[:200]] == [f"s{i}" for i in range(200)]
    assert queue.shutdown(5)
    assert [s.name for s in memory.spans] == [f"s{i}" for i in range(250)]
    stats = queue.stats()
    assert (stats.enqueued, stats.exported, stats.queued, stats.dropped_queue_full) == (250, 250, 0, 0)
    assert stats.last_success is not None and memory.is_shutdown


def test_small_batch_goes_after_delay() -> None:
    memory = InMemoryExporter()
    queue = ExportQueue([memory], batch_size=512, delay_s=0.05).start()
    queue.put(span(0))
    assert wait_until(lambda: len(memory.spans) == 1, 2)
    queue.shutdown(2)


def test_full_queue_drops_and_counts_without_blocking() -> None:
    memory = InMemoryExporter()
    queue = ExportQueue([memory], max_queue=100, batch_size=1000, delay_s=30)  # not started
    started = time.perf_counter()
    accepted = queue.put_many(span(i) for i in range(1000))
    elapsed = time.perf_counter() - started
    assert accepted == 100
    stats = queue.stats()
    assert (stats.enqueued, stats.dropped_queue_full, stats.queued) == (100, 900, 100)
    assert elapsed < 0.5  # 1000 puts; a blocking put would sit here forever
    queue.start()
    assert queue.shutdown(5)
    assert [s.name for s in memory.spans] == [f"s{i}" for i in range(100)]


def test_shutdown_flushes_everything_queued() -> None:
    memory = InMemoryExporter()
    queue = ExportQueue([memory], batch_size=64, delay_s=30).start()
    queue.put_many(span(i) for i in range(1000))
    assert queue.shutdown(5) is True
    assert len(memory.spans) == 1000
    assert queue.put(span(1)) is False  # closed: refused and counted
    assert queue.stats().dropped_queue_full == 1


def test_force_flush_exports_now() -> None:
    memory = InMemoryExporter()
    queue = ExportQueue([memory], batch_size=512, delay_s=30).start()
    queue.put_many(span(i) for i in range(10))
    assert queue.force_flush(5) is True
    assert len(memory.spans) == 10
    queue.shutdown(2)


@pytest.mark.parametrize("raise_instead", [False, True])
def test_failed_batch_is_retried_then_counted(raise_instead: bool) -> None:
    flaky = FlakyExporterMock(raise_instead)
    flaky.failing.set()
    queue = ExportQueue([flaky], batch_size=10, delay_s=0.01, max_retries=2, retry_pause_s=0.01).start()
    queue.put_many(span(i) for i in range(10))
    assert wait_until(lambda: queue.stats().dropped_export_failed == 10, 5)
    stats = queue.stats()
    assert flaky.attempts == 3  # first try + 2 retries
    assert (stats.failed_attempts, stats.exported, stats.enqueued) == (3, 0, 10)
    assert "FlakyExporterMock" in stats.last_error
    assert stats.last_success is None
    # The collector comes back: later spans flow again by themselves.
    flaky.failing.clear()
    queue.put_many(span(i) for i in range(10, 20))
    assert wait_until(lambda: queue.stats().exported == 10, 5)
    assert [s.name for s in flaky.delivered] == [f"s{i}" for i in range(10, 20)]
    queue.shutdown(2)
    assert flaky.shut


def test_transient_failure_recovered_by_retry_loses_nothing() -> None:
    flaky = FlakyExporterMock()
    flaky.failing.set()
    queue = ExportQueue([flaky], batch_size=5, delay_s=0.01, max_retries=5, retry_pause_s=0.05).start()
    queue.put_many(span(i) for i in range(5))
    assert wait_until(lambda: flaky.attempts >= 1, 2)
    flaky.failing.clear()
    assert wait_until(lambda: queue.stats().exported == 5, 5)
    assert queue.stats().dropped_export_failed == 0
    queue.shutdown(2)


def test_one_exporter_failing_does_not_starve_the_other() -> None:
    memory, flaky = InMemoryExporter(), FlakyExporterMock()
    flaky.failing.set()
    queue = ExportQueue([flaky, memory], batch_size=4, delay_s=0.01, max_retries=0).start()
    queue.put_many(span(i) for i in range(4))
    assert wait_until(lambda: len(memory.spans) == 4, 3)
    assert wait_until(lambda: queue.stats().dropped_export_failed == 4, 3)
    queue.shutdown(2)


def test_hung_exporter_does_not_block_put_and_shutdown_is_bounded() -> None:
    blocking = BlockingExporterMock()
    queue = ExportQueue([blocking], max_queue=50, batch_size=10, delay_s=0.01).start()
    queue.put_many(span(i) for i in range(10))
    assert blocking.entered.wait(2)
    accepted = queue.put_many(span(i) for i in range(10, 200))  # worker is stuck; puts still return
    assert accepted == 50
    started = time.monotonic()
    assert queue.shutdown(0.3) is False
    assert time.monotonic() - started < 3
    stats = queue.stats()
    assert stats.dropped_queue_full == 140
    # Every enqueued span is accounted for: exported, failed, or dropped at shutdown.
    assert stats.exported + stats.dropped_export_failed + stats.dropped_shutdown + stats.queued == 60


def test_needs_an_exporter() -> None:
    with pytest.raises(ValueError):
        ExportQueue([])


class _LosingExporter(SpanExporter):
    """The export process died holding the first batch (hostagent.export.process), then is back."""

    def __init__(self) -> None:
        self.attempts = 0
        self.delivered: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.attempts += 1
        if self.attempts == 1:
            raise ExportLost(f"the export process exited holding {len(spans)} spans")
        self.delivered.extend(s.name for s in spans)
        return SpanExportResult.SUCCESS


def test_a_lost_batch_is_counted_at_once_and_never_retried() -> None:
    """It may have been sent before the process died: a retry could deliver it twice."""
    losing = _LosingExporter()
    queue = ExportQueue([losing], batch_size=4, delay_s=0.01, max_retries=3, retry_pause_s=0.01).start()
    queue.put_many(span(i) for i in range(4))
    assert wait_until(lambda: queue.stats().dropped_export_failed == 4, 5)
    queue.put_many(span(i) for i in range(4, 8))
    assert wait_until(lambda: queue.stats().exported == 4, 5)
    stats = queue.stats()
    assert losing.attempts == 2 and losing.delivered == [f"s{i}" for i in range(4, 8)]
    assert stats.failed_attempts == 1
    assert stats.last_error == "_LosingExporter: the export process exited holding 4 spans"
    queue.shutdown(2)


class BatchSizesMock(InMemoryExporter):
    """Records the size of every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.sizes.append(len(spans))
        return super().export(spans)


def test_batches_are_a_slice_of_the_recent_rate_within_bounds() -> None:
    queue = ExportQueue([InMemoryExporter()], max_queue=50_000, batch_size=512, delay_s=30, slice_s=0.025,
                        min_slice=16)  # not started: the test moves the clock
    assert queue.batch_now == 512  # no rate measured yet
    since = queue._rate_mark[0]
    queue.put_many(span(i) for i in range(2000))
    queue._resize(since + 0.1)
    assert queue.batch_now == 512  # under a quarter second: not measured
    queue._resize(since + 1.0)
    assert queue.batch_now == 50  # 2,000 spans/s: 25 ms of them
    queue.put_many(span(i) for i in range(20_000))
    queue._resize(since + 1.5)
    assert queue.batch_now == 512  # 40,000 spans/s: at most batch_size
    queue.put_many(span(i) for i in range(3))
    queue._resize(since + 2.5)
    assert queue.batch_now == 16  # a trickle: at least min_slice
    queue.shutdown(5)


def test_a_backlog_goes_in_full_batches_then_in_slices() -> None:
    sizes = BatchSizesMock()
    queue = ExportQueue([sizes], batch_size=512, delay_s=30, slice_s=0.025, min_slice=16)
    since = queue._rate_mark[0]
    queue.put_many(span(i) for i in range(2000))
    queue._resize(since + 1.0)  # 2,000 spans/s: slices of 50
    queue.start()
    assert queue.force_flush(5)
    assert sizes.sizes == [512, 512, 512] + [50] * 9 + [14]
    assert [s.name for s in sizes.spans] == [f"s{i}" for i in range(2000)]
    queue.put_many(span(i) for i in range(60))  # past one slice: the worker wakes without the delay
    assert wait_until(lambda: len(sizes.spans) >= 2050, 5)
    queue.shutdown(5)
