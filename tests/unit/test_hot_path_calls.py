"""What the compiled per-span path no longer calls into interpreted code for (an interpreted call
from a compiled stage costs a frame and boxing each time): the settings' snapshot is an attribute,
the pipeline hands spans to the linker's own ``offer``, the linker's emit is compiled, the export
queue's ``put`` reads no Event, and CONNECT / CLOSE events go to no observer."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext

import hostagent.compiled
from hostagent.config import Config
from hostagent.export.memory import InMemoryExporter
from hostagent.export.queue import ExportQueue
from hostagent.identity.listen_events import IGNORED, ListenEvents
from hostagent.model import Call, CaptureEvent, EventKind, Role
from hostagent.pipeline import SpanOnly
from hostagent.receiver.wiring import Layering
from hostagent.settings import RuntimeSettings, SamplingSettings, SettingsHolder
from tests.support.pipeline_parts import Exported, event_fed_pipeline


def span(i: int) -> ReadableSpan:
    return ReadableSpan(name=f"s{i}", context=SpanContext(1, i + 1, is_remote=False), resource=Resource({}))


def test_the_settings_snapshot_is_a_plain_attribute_that_update_swaps() -> None:
    holder = SettingsHolder(RuntimeSettings())
    first = holder.current
    assert vars(holder)["current"] is first  # an instance attribute: no property call per read
    new = holder.update(lambda s: RuntimeSettings(sampling=SamplingSettings(ratio=0.5)))
    assert holder.current is new and vars(holder)["current"] is new
    assert new.generation == first.generation + 1 and new.sampling.ratio == 0.5


def test_layering_offer_is_the_linkers_own() -> None:
    exported = Exported()
    layering = Layering(Config(), exported.enqueue, lambda: None)
    assert layering.offer == layering.linker.offer  # no forwarding method between them


def test_the_linkers_emit_without_a_receiver_is_compiled_and_passes_the_span_on() -> None:
    exported = Exported()
    layering = Layering(Config(), exported.enqueue, lambda: None)
    emit = layering.linker.emit
    assert isinstance(emit, SpanOnly)  # pipeline.py's: compiled with it, not a lambda in wiring.py
    s = span(1)
    emit(Call(protocol="http", role=Role.CLIENT, start_ns=1, end_ns=2, name="GET"), s)  # the call is not passed on
    assert exported.spans == [s]


class NoIsSet(threading.Event):
    def is_set(self) -> bool:
        raise AssertionError("put read the Event")


def test_put_reads_no_event_and_refuses_after_shutdown() -> None:
    memory = InMemoryExporter()
    queue = ExportQueue([memory], max_queue=10, batch_size=1000)
    stopping = NoIsSet()
    queue._stopping = stopping  # type: ignore[misc]  # what put must not ask per span
    assert queue.put(span(1))
    queue._stopping = threading.Event()  # type: ignore[misc]  # shutdown waits on it
    queue.shutdown(1)
    assert not queue.put(span(2))  # refused once shut down, and counted
    stats = queue.stats()
    assert (stats.enqueued, stats.dropped_queue_full) == (1, 1)


def event(kind: EventKind) -> CaptureEvent:
    return CaptureEvent(kind=kind, pid=4242, tid=4242, fd=7, ts_ns=1, comm="c", data=b"", size=0)


def test_connect_and_close_change_nothing_in_the_listener_events(tmp_path: Path) -> None:
    assert IGNORED == {EventKind.CONNECT, EventKind.CLOSE}  # what the pipeline leaves out (pipeline.py)
    _, listeners, cache, _ = event_fed_pipeline(tmp_path)
    events = ListenEvents(listeners, cache)
    before = (listeners.generation, dict(listeners._by_endpoint), len(cache.pids.recent))
    for kind in IGNORED:
        events.on_event(event(kind))
    assert (listeners.generation, dict(listeners._by_endpoint), len(cache.pids.recent)) == before


@pytest.mark.skipif("hostagent.identity.listen_events" in hostagent.compiled.COMPILED_MODULES,
                    reason="a compiled class's method cannot be replaced (HOSTAGENT_PURE=1 runs it)")
def test_the_pipeline_hands_connect_and_close_to_no_observer(tmp_path: Path, monkeypatch: Any) -> None:
    seen: list[EventKind] = []
    monkeypatch.setattr(ListenEvents, "on_event", lambda self, e: seen.append(e.kind))
    pipe, _, _, _ = event_fed_pipeline(tmp_path)
    assert pipe.listens is not None
    kinds = [k for k in EventKind if k != EventKind.DATA]
    for kind in kinds:
        pipe.on_event(event(kind))
    assert seen == [k for k in kinds if k not in IGNORED]
