"""Shared pytest setup: root-only tests are skipped, with the reason, when not root."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, otlp_http_receiver, otlp_receiver  # noqa: F401


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpGrpcReceiver]:
    """One real OTLP/gRPC receiver (the collector) for a whole test module."""
    r = OtlpGrpcReceiver().start()
    yield r
    r.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: real BPF programs and servers (run make test as root)")
    for item in items:
        if "root" in item.keywords or "e2e" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    from hostagent import compiled

    return f"hostagent per-span stages: {compiled.STATE}"  # compiled, or why the source runs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failed test says what each running agent dropped: on a host whose other work fills the
    ring, the spans a test waits for are shed (and counted), and a bare TimeoutError hid that."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not Agent.running:
        return
    lines = []
    for agent in list(Agent.running):
        try:
            lines.append(f"agent {agent.workdir.name} (pid {agent.pid}) drops: {agent.drops() or 'no answer'}")
        except Exception as exc:  # the report must not fail the run
            lines.append(f"agent {agent.workdir.name}: drops not read ({exc})")
    report.sections.append(("hostagent drops", "\n".join(lines)))
