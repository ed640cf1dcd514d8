"""Stand-ins for the pipeline's neighbours in unit tests that hand Calls in directly
(``Pipeline.on_call``): no tracker behind it, and a sink that keeps what it is given; and a pipeline
whose identity and peers read a fixture /proc (``event_fed_pipeline``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from hostagent.identity.docker import DockerMetadata
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.peers import PeerResolver
from hostagent.identity.procfs import ProcFS
from hostagent.identity.service import HostInfo, ServiceCache
from hostagent.model import Call
from hostagent.pipeline import Pipeline
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder


class NoTracker:
    """The tracker of a pipeline fed through ``on_call``: events make no calls."""

    def handle(self, event: object) -> list[Call]:
        return []


class Exported:
    """The export queue, as a list of the spans it was given."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def enqueue(self, span: ReadableSpan) -> bool:
        self.spans.append(span)
        return True


# The host every identity fixture is named on.
FIXTURE_HOST = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")


def event_fed_pipeline(root: Path, listing: Optional[ProcFS] = None, docker: Optional[DockerMetadata] = None,
                       ) -> tuple[Pipeline, ListenerMap, ServiceCache, Exported]:
    """A pipeline with identity and peers over the fixture /proc at ``root`` (the listener table
    reads ``listing``, that tree by default) whose listener table learns only from events: its
    refresh thread is not started, as if everything happened between two refreshes."""
    cache = ServiceCache(ProcFS(str(root), clock_ticks=100), docker, host_info=FIXTURE_HOST)
    listeners = ListenerMap(listing or ProcFS(str(root)), min_gap=0.0)
    exported = Exported()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http"}))), NoTracker(), builder.build,
                    exported, identity=cache, peers=PeerResolver(listeners, cache.peek, cache.pids))  # fmt: skip
    return pipe, listeners, cache, exported
