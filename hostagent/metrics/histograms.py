"""Explicit-bucket histograms aggregated by the agent itself, handed to the SDK's metric readers.

The SDK's ``Histogram.record`` costs ~6 us per value here (it cleans and hashes the attributes
of every measurement, then takes a lock per series): for RED metrics that is one record per
captured call, about a third more than the rest of a span's work. Here a value costs a dict
lookup on a key the caller already has and a few additions; the points are built when a reader
collects, as the SDK's own aggregation builds them (same buckets, ``bisect_left`` on the bounds,
min/max, cumulative or delta as the reader asks, a series' start time at its first value).

The SDK has no public hook for points made outside its instruments. ``attach`` wraps the
collect callback a ``MeterProvider`` gives each of its readers (``MetricReader._collect``,
internal to the SDK) and adds these metrics to what it returns; when the SDK does not look as
expected it returns False and the caller records through the SDK's instruments instead.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Sequence
from time import time_ns
from typing import Any, Callable, Optional

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

Key = frozenset[tuple[str, Any]]


class _Series:
    """One attribute set's values since its start (cumulative) or the last collection (delta)."""

    __slots__ = ("attributes", "buckets", "count", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: dict[str, Any], n_buckets: int, start_ns: int) -> None:
        self.attributes = attributes
        self.start_ns = start_ns
        self.buckets = [0] * n_buckets
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf


class _ReaderState:
    """What one reader has not collected yet (delta) or everything (cumulative)."""

    def __init__(self, delta: bool, names: Sequence[str]) -> None:
        self.delta = delta
        self.series: dict[str, dict[Key, _Series]] = {name: {} for name in names}
        self.last_collect_ns = time_ns()
        # delta: the series collected before; a series seen again starts at the last collection,
        # a new one at its first value (as the SDK's aggregation does)
        self.collected: set[tuple[str, Key]] = set()


class HistogramSet:
    """Named explicit-bucket histograms (seconds, one set of bounds), recorded by the caller's key."""

    def __init__(self, scope: InstrumentationScope, metrics: dict[str, str], bounds: Sequence[float],
                 unit: str = "s") -> None:
        self.scope = scope
        self.descriptions = dict(metrics)  # name -> description
        self.bounds = tuple(bounds)
        self.unit = unit
        self._readers: list[_ReaderState] = []
        self._resource: Optional[Resource] = None
        # held while a value is added and while a reader collects; a caller that keeps counts of
        # its own beside the values takes it once for both (``add``)
        self.lock = threading.Lock()

    # -- wiring ---------------------------------------------------------------------------------

    def attach(self, provider: Any) -> bool:
        """Add these histograms to every reader of ``provider`` (an SDK MeterProvider); False,
        changing nothing, when its readers cannot be reached this way."""
        readers = getattr(provider, "_metric_readers", None)
        if not isinstance(readers, (list, tuple)) or not all(callable(getattr(r, "_collect", None)) for r in readers):
            return False
        self._resource = getattr(getattr(provider, "_sdk_config", None), "resource", None)
        for reader in readers:
            state = _ReaderState(_temporality(reader) is AggregationTemporality.DELTA, list(self.descriptions))
            self._readers.append(state)
            reader._set_collect_callback(self._collector(reader._collect, state))
        return True

    def _collector(self, inner: Callable[..., Optional[MetricsData]], state: _ReaderState) -> Callable[..., Any]:
        def collect(reader: Any, *args: Any, **kwargs: Any) -> Optional[MetricsData]:
            return self._merge(inner(reader, *args, **kwargs), self._points(state))

        return collect

    # -- hot path -------------------------------------------------------------------------------

    def record(self, name: str, key: Key, attributes: dict[str, Any], value: float) -> None:
        """Add ``value`` to the series ``key`` (hashable, one per distinct ``attributes``)."""
        with self.lock:
            self.add(name, key, attributes, value)

    def add(self, name: str, key: Key, attributes: dict[str, Any], value: float) -> None:
        """``record`` for a caller that holds ``lock``. The same ``key`` object each time for a
        series makes its lookups identity hits (no element-wise comparison of the frozensets)."""
        bucket = bisect_left(self.bounds, value)
        for state in self._readers:
            series = state.series[name]
            s = series.get(key)
            if s is None:
                s = series[key] = _Series(attributes, len(self.bounds) + 1, time_ns())
            s.buckets[bucket] += 1
            s.count += 1
            s.sum += value
            if value < s.min:
                s.min = value
            if value > s.max:
                s.max = value

    # -- collection -----------------------------------------------------------------------------

    def _points(self, state: _ReaderState) -> list[Metric]:
        now = time_ns()
        temporality = AggregationTemporality.DELTA if state.delta else AggregationTemporality.CUMULATIVE
        metrics = []
        with self.lock:
            since = state.last_collect_ns
            state.last_collect_ns = now
            for name, series in state.series.items():
                points = []
                for key, s in series.items():
                    start = s.start_ns
                    if state.delta:
                        if (name, key) in state.collected:
                            start = since
                        else:
                            state.collected.add((name, key))
                    points.append(HistogramDataPoint(
                        attributes=s.attributes, start_time_unix_nano=start, time_unix_nano=now, count=s.count,
                        sum=s.sum, bucket_counts=tuple(s.buckets), explicit_bounds=self.bounds, min=s.min,
                        max=s.max, exemplars=[]))  # fmt: skip
                if state.delta:
                    series.clear()
                if points:
                    metrics.append(Metric(name=name, description=self.descriptions[name], unit=self.unit,
                                          data=Histogram(data_points=points, aggregation_temporality=temporality)))
        return metrics

    def _merge(self, data: Optional[MetricsData], metrics: list[Metric]) -> Optional[MetricsData]:
        """``data`` with ``metrics`` added to its scope (the first resource's; a new scope when
        it has none of that name and version)."""
        if not metrics:
            return data
        if data is None or not data.resource_metrics:
            resource = self._resource if self._resource is not None else Resource.get_empty()
            return MetricsData(resource_metrics=[ResourceMetrics(
                resource=resource, scope_metrics=[ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")],
                schema_url="")])  # fmt: skip
        first, *rest = data.resource_metrics
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == self.scope.name and sm.scope.version == self.scope.version:
                scopes[i] = ScopeMetrics(scope=sm.scope, metrics=[*sm.metrics, *metrics], schema_url=sm.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(scope=self.scope, metrics=metrics, schema_url=""))
        return MetricsData(resource_metrics=[
            ResourceMetrics(resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url), *rest])


def _temporality(reader: Any) -> AggregationTemporality:
    """The temporality ``reader`` asks of synchronous histograms (cumulative unless it says delta)."""
    table = getattr(reader, "_instrument_class_temporality", None) or {}
    for cls, temporality in table.items():
        if getattr(cls, "__name__", "") in ("_Histogram", "Histogram"):
            return temporality  # type: ignore[no-any-return]
    return AggregationTemporality.CUMULATIVE
