"""Library retries are rate-limited in the log; the agent's own lines never are."""

from __future__ import annotations

import logging

from hostagent.logsetup import RateLimit


def record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def test_exporter_retries_are_limited_and_counted() -> None:
    limit = RateLimit(interval_s=3600)
    name = "opentelemetry.exporter.otlp.proto.grpc.exporter"
    assert limit.filter(record(name, "retry 1"))
    assert [limit.filter(record(name, f"retry {i}")) for i in range(2, 5)] == [False, False, False]
    assert limit.suppressed == 3
    limit.interval_s = 0
    later = record(name, "retry 5")
    assert limit.filter(later)
    assert later.msg == "retry 5 (3 similar messages suppressed)"


def test_agent_lines_pass() -> None:
    limit = RateLimit(interval_s=3600)
    assert all(limit.filter(record("hostagent", f"line {i}")) for i in range(5))
