"""The OTLP/gRPC send in a process of its own (hostagent.export.process / .child), against the real
receiver in this process: spans arrive through the child exactly as encoded; a collector down then
up costs counted failures, then delivers; shutdown flushes; a child killed by SIGKILL holding a batch
is restarted and that batch counted lost (never retried: it may have been sent); a child that cannot
start leaves the export in process, said once. No root needed."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import grpc
import pytest

from hostagent.export.otlp import make_otlp_exporter
from hostagent.export.process import ChildExporter
from hostagent.export.queue import ExportQueue
from tests.support.otlp_receiver import OtlpGrpcReceiver, wait_until
from tests.unit.test_export_otlp import builder, server_call


def child_exporter(endpoint: str, timeout_s: float = 5.0, **kw: Any) -> ChildExporter:
    settings = {"endpoint": endpoint, "protocol": "grpc", "timeout_s": timeout_s, **kw}
    return ChildExporter(settings, make_otlp_exporter(**settings), timeout_s=timeout_s).start()


def paths(spans: Any) -> list[str]:
    return sorted(str(s.attributes["url.path"]) for s in spans)


def test_spans_arrive_through_the_child(otlp_receiver: OtlpGrpcReceiver) -> None:
    child = child_exporter(otlp_receiver.endpoint, headers={"x-tenant": "a"}, compression="gzip")
    pid = child.pid
    assert pid is not None and pid != os.getpid()
    b = builder()
    queue = ExportQueue([child], batch_size=100, delay_s=0.05).start()
    queue.put_many(b.build(server_call(i)) for i in range(250))
    got = otlp_receiver.wait_for_spans(250, 20)
    assert paths(got) == paths(b.build(server_call(i)) for i in range(250))
    span = next(s for s in got if s.attributes["url.path"] == "/items/7")
    assert span.attributes["http.response.status_code"] == 500 and span.resource["service.name"] == "checkout"
    assert otlp_receiver.recorder.headers[-1]["x-tenant"] == "a"
    assert queue.shutdown(10) is True
    stats = queue.stats()
    assert (stats.enqueued, stats.exported, stats.dropped_export_failed) == (250, 250, 0)
    assert child.restarts == 0 and child.pid is None  # EXIT: the child ended with the queue


def test_collector_down_then_up_counts_failures_then_delivers() -> None:
    receiver = OtlpGrpcReceiver().start()
    child = child_exporter(receiver.endpoint, timeout_s=1.0)
    queue = ExportQueue([child], max_queue=100, batch_size=10, delay_s=0.05, max_retries=1, retry_pause_s=0.1)
    queue.start()
    b = builder()
    try:
        queue.put_many(b.build(server_call(i)) for i in range(10))
        receiver.wait_for_spans(10, 15)
        receiver.stop()
        queue.put_many(b.build(server_call(i)) for i in range(10, 30))
        assert wait_until(lambda: queue.stats().dropped_export_failed >= 10, 20)
        assert queue.stats().last_error == "ChildExporter: FAILURE"
        receiver.start()
        assert wait_until(lambda: queue.stats().queued == 0, 30)
        receiver.clear()
        queue.put_many(b.build(server_call(i)) for i in range(1000, 1005))
        assert paths(receiver.wait_for_spans(5, 15)) == [f"/items/{i}" for i in range(1000, 1005)]
    finally:
        queue.shutdown(5)
        receiver.stop()
    stats = queue.stats()
    assert stats.enqueued == stats.exported + stats.dropped_export_failed + stats.dropped_shutdown
    assert child.restarts == 0


def test_shutdown_flushes_through_the_child(otlp_receiver: OtlpGrpcReceiver) -> None:
    child = child_exporter(otlp_receiver.endpoint)
    queue = ExportQueue([child], batch_size=512, delay_s=60).start()  # only shutdown flushes
    b = builder()
    queue.put_many(b.build(server_call(i)) for i in range(2000))
    assert queue.shutdown(15) is True
    assert len(otlp_receiver.spans) == 2000


def test_a_child_killed_holding_a_batch_is_restarted_and_the_batch_counted_lost(
        otlp_receiver: OtlpGrpcReceiver) -> None:
    otlp_receiver.fail_with = grpc.StatusCode.UNAVAILABLE  # the child holds the batch, retrying
    child = child_exporter(otlp_receiver.endpoint, timeout_s=10.0)
    queue = ExportQueue([child], batch_size=5, delay_s=0.01, max_retries=2, retry_pause_s=0.05).start()
    b = builder()
    first = child.pid
    assert first is not None
    queue.put_many(b.build(server_call(i)) for i in range(5))
    assert wait_until(lambda: otlp_receiver.rejected >= 1, 15)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: queue.stats().dropped_export_failed == 5, 10)
    stats = queue.stats()
    assert stats.failed_attempts == 1  # lost: not retried (the dead child may have sent it)
    assert "holding 5 spans" in stats.last_error
    assert child.restarts == 1 and child.lost_spans == 5
    second = child.pid
    assert second is not None and second != first
    otlp_receiver.fail_with = None
    queue.put_many(b.build(server_call(i)) for i in range(100, 105))
    assert paths(otlp_receiver.wait_for_spans(5, 15)) == [f"/items/{i}" for i in range(100, 105)]
    assert queue.shutdown(10) is True
    stats = queue.stats()
    assert (stats.enqueued, stats.exported, stats.dropped_export_failed) == (10, 5, 5)


def test_a_child_killed_between_batches_costs_nothing(otlp_receiver: OtlpGrpcReceiver) -> None:
    child = child_exporter(otlp_receiver.endpoint)
    queue = ExportQueue([child], batch_size=5, delay_s=0.01).start()
    b = builder()
    queue.put_many(b.build(server_call(i)) for i in range(5))
    assert wait_until(lambda: queue.stats().exported == 5, 15)  # its result is in: it holds nothing
    first = child.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: child.pid is None, 5)
    queue.put_many(b.build(server_call(i)) for i in range(5, 10))
    assert len(otlp_receiver.wait_for_spans(10, 15)) == 10
    assert queue.shutdown(10) is True
    assert queue.stats().dropped_export_failed == 0 and child.lost_spans == 0 and child.restarts == 1


def test_a_child_that_cannot_start_leaves_the_export_in_process(
        otlp_receiver: OtlpGrpcReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("hostagent.export.process.sys.executable", "/bin/false")  # starts, exits at once
    caplog.set_level(logging.INFO, "hostagent.export.process")
    child = child_exporter(otlp_receiver.endpoint)
    queue = ExportQueue([child], batch_size=5, delay_s=0.01).start()
    b = builder()
    for n in range(3):
        queue.put_many(b.build(server_call(i)) for i in range(n * 5, n * 5 + 5))
        otlp_receiver.wait_for_spans(n * 5 + 5, 15)
    assert queue.shutdown(10) is True
    assert queue.stats().exported == 15 and queue.stats().dropped_export_failed == 0
    said = [r.getMessage() for r in caplog.records if "in process from now on" in r.getMessage()]
    assert len(said) == 1  # once (EOF or ECONNRESET, as the exit and the CONFIG cross)
    assert said[0].startswith("span export: the export process cannot start (")


def test_reconfigure_reaches_the_child(otlp_receiver: OtlpGrpcReceiver) -> None:
    other = OtlpGrpcReceiver().start()
    try:
        child = child_exporter(otlp_receiver.endpoint)
        queue = ExportQueue([child], batch_size=5, delay_s=0.01).start()
        b = builder()
        queue.put_many(b.build(server_call(i)) for i in range(5))
        otlp_receiver.wait_for_spans(5, 15)
        settings = {"endpoint": other.endpoint, "protocol": "grpc", "timeout_s": 5.0, "headers": {"x-new": "1"}}
        child.reconfigure(settings, make_otlp_exporter(**settings))
        queue.put_many(b.build(server_call(i)) for i in range(5, 10))
        assert paths(other.wait_for_spans(5, 15)) == [f"/items/{i}" for i in range(5, 10)]
        assert other.recorder.headers[-1]["x-new"] == "1"
        assert len(otlp_receiver.spans) == 5
        assert queue.shutdown(10) is True
    finally:
        other.stop()


def test_the_child_ignores_sigterm_and_ends_when_the_agent_closes(otlp_receiver: OtlpGrpcReceiver) -> None:
    """systemd signals the unit's whole cgroup at stop: the child must outlive SIGTERM until the
    agent has flushed to it."""
    child = child_exporter(otlp_receiver.endpoint)
    pid = child.pid
    assert pid is not None
    time.sleep(0.5)  # its signal dispositions are set before its imports
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.3)
    assert child.pid == pid
    queue = ExportQueue([child], batch_size=5, delay_s=0.01).start()
    queue.put_many(builder().build(server_call(i)) for i in range(5))
    otlp_receiver.wait_for_spans(5, 15)
    assert queue.shutdown(10) is True
    assert child.pid is None
