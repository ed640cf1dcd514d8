"""A bug in what identity learns from a lifecycle event costs that lesson, not the event: the
tracker still gets the connect, accept or close (a lost close leaves its connection's last call
unfinished until the connection is swept), and the error is counted as ``pipeline_error``."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.model import CaptureEvent, EventKind
from hostagent.pipeline import Pipeline
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.pipeline_parts import Exported


class RecordingTracker:
    def __init__(self, fail: bool = False) -> None:
        self.kinds: list[EventKind] = []
        self.fail = fail

    def handle(self, event: CaptureEvent) -> list[object]:
        self.kinds.append(event.kind)
        if self.fail:
            raise RuntimeError("tracker bug")
        return []


class BrokenIdentity:
    """Every lesson raises, as a bug in identity would."""

    def on_exec(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("identity bug")

    on_exit = on_fork = on_cgroup = on_exec


def pipeline(tracker: RecordingTracker) -> Pipeline:
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http"}))), tracker,  # type: ignore[arg-type]
                    builder.build, Exported(), identity=BrokenIdentity())
    return pipe


@pytest.mark.parametrize("kind", [EventKind.EXIT, EventKind.FORK, EventKind.EXEC, EventKind.CGROUP])
def test_an_identity_error_still_hands_the_event_to_the_tracker(kind: EventKind) -> None:
    tracker = RecordingTracker()
    pipe = pipeline(tracker)
    pipe.on_event(CaptureEvent(kind, 1, 100, 100, 0))
    assert tracker.kinds == [kind]
    assert pipe.dropped["pipeline_error"] == 1


def test_a_tracker_error_is_counted_once() -> None:
    tracker = RecordingTracker(fail=True)
    pipe = pipeline(tracker)
    pipe.on_event(CaptureEvent(EventKind.DATA, 1, 100, 100, 3))
    assert tracker.kinds == [EventKind.DATA] and pipe.dropped["pipeline_error"] == 1
