"""Stand-ins for the pipeline's neighbours in unit tests that hand Calls in directly
(``Pipeline.on_call``): no tracker behind it, and a sink that keeps what it is given."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan

from hostagent.model import Call


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
