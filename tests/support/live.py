"""Which of the spans seen are still alive, without weak references: the agent's spans are
SpanRecords (hostagent.traces.record), a compiled class that takes none."""

from __future__ import annotations

import gc
from typing import Any


class LiveSpans:
    """``add(span)`` each span; ``len()`` = how many of them the garbage collector still tracks
    (call ``gc.collect()`` first). Spans are told by identity and type: an id freed and reused by
    a span of the same type not added is counted too, which only errs towards "kept alive"."""

    def __init__(self) -> None:
        self._types: dict[int, type] = {}

    def add(self, span: Any) -> None:
        self._types[id(span)] = type(span)

    def __len__(self) -> int:
        types = self._types
        return sum(1 for obj in gc.get_objects() if types.get(id(obj)) is type(obj))
