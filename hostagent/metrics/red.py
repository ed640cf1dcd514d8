"""RED metrics (rate, errors, duration) from Calls, named per the OpenTelemetry conventions.

One duration histogram per kind of call; its count is the request rate and the ``error.type``
attribute splits out the errors, which is how the semantic conventions model RED:

    http  SERVER -> http.server.request.duration   http CLIENT -> http.client.request.duration
    grpc  SERVER -> rpc.server.call.duration       grpc CLIENT -> rpc.client.call.duration
    postgresql/mysql/redis CLIENT -> db.client.operation.duration
    dns   CLIENT -> dns.lookup.duration
(all in seconds). Server-side database calls are not recorded: the conventions define no
database server metric, and on a host that runs both ends they would double count.

Metrics come from one MeterProvider whose Resource is the agent's, so the traced service is a
data point attribute (``service.name``). Only low-cardinality attributes are kept (an allowlist
per metric) and each metric has a cap on distinct attribute sets: past it, points go to the
``otel.metric.overflow=true`` series, as the OpenTelemetry SDK spec does, so memory stays flat.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Final, Optional

from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import hostagent
from hostagent.metrics.histograms import HistogramSet, Key
from hostagent.model import Call, Role
from hostagent.traces.spans import connection_attributes

# The conventions' advisory boundaries for request durations, in seconds.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_HTTP_COMMON = ("http.request.method", "http.response.status_code", "url.scheme", "network.protocol.version")
_RPC_COMMON = ("rpc.system", "rpc.system.name", "rpc.service", "rpc.method", "rpc.grpc.status_code")
_DB = (
    "db.system.name",
    "db.operation.name",
    "db.collection.name",
    "db.namespace",
    "db.response.status_code",
    "db.query.summary",
    "server.address",
    "server.port",
)

# metric name -> (description, attribute allowlist); error.type and service.name are always kept.
METRICS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "http.server.request.duration": ("Duration of HTTP server requests.", (*_HTTP_COMMON, "http.route")),
    "http.client.request.duration": (
        "Duration of HTTP client requests.",
        (*_HTTP_COMMON, "server.address", "server.port", "url.template"),
    ),
    "rpc.server.call.duration": ("Duration of incoming RPCs.", _RPC_COMMON),
    "rpc.client.call.duration": (
        "Duration of outgoing RPCs.",
        (*_RPC_COMMON, "server.address", "server.port"),
    ),
    "db.client.operation.duration": ("Duration of database client operations.", _DB),
    "dns.lookup.duration": ("Time taken to perform a DNS lookup.", ("dns.question.name",)),
}

_ROUTES: Final[dict[tuple[str, Role], str]] = {
    ("http", Role.SERVER): "http.server.request.duration",
    ("http", Role.CLIENT): "http.client.request.duration",
    ("http2", Role.SERVER): "http.server.request.duration",
    ("http2", Role.CLIENT): "http.client.request.duration",
    ("grpc", Role.SERVER): "rpc.server.call.duration",
    ("grpc", Role.CLIENT): "rpc.client.call.duration",
    ("postgresql", Role.CLIENT): "db.client.operation.duration",
    ("mysql", Role.CLIENT): "db.client.operation.duration",
    ("redis", Role.CLIENT): "db.client.operation.duration",
    ("dns", Role.CLIENT): "dns.lookup.duration",
}

# The only allowlisted attributes a connection can add (connection_attributes), and the metrics
# that allow them: the others take nothing from the connection. (Final, as the other constants
# here: compiled, no lookup in the module's dict per call.)
_FROM_CONNECTION: Final = ("server.address", "server.port")
_USES_CONNECTION: Final = {name: any(k in allowed for k in _FROM_CONNECTION) for name, (_, allowed) in METRICS.items()}

OVERFLOW: Final = {"otel.metric.overflow": True}
_OVERFLOW_KEY: Final = frozenset(OVERFLOW.items())

# an allowlisted attribute the Call does not have, in the memo's keys (None could be a value)
_ABSENT: Final = object()


def metric_for(call: Call) -> Optional[str]:
    """The histogram a Call is recorded in, or None when the conventions have none for it."""
    return _ROUTES.get((call.protocol, call.role))


def default_service_name(call: Call) -> str:
    name = getattr(call.service, "name", None)
    if name:
        return str(name)
    if call.conn is not None and call.conn.comm:
        return call.conn.comm
    return "unknown_service"


class RedMetrics:
    """``record(call)`` adds one Call to its duration histogram. Thread safe.

    The histograms are aggregated here (``HistogramSet``: ~6 us less per call than the SDK's
    ``Histogram.record``) and reach the provider's readers when they collect; through the SDK's
    own instruments when its readers cannot be reached that way (``aggregated`` False).
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        max_series_per_metric: int = 2000,
        service_name: Callable[[Call], str] = default_service_name,
    ) -> None:
        self._own = HistogramSet(InstrumentationScope("hostagent", hostagent.__version__),
                                 {name: description for name, (description, _) in METRICS.items()},
                                 DURATION_BUCKETS)  # fmt: skip
        self.aggregated = self._own.attach(meter_provider)
        self._histograms: dict[str, Histogram] = {}
        if not self.aggregated:
            meter = meter_provider.get_meter("hostagent", hostagent.__version__)
            self._histograms = {
                name: meter.create_histogram(
                    name, unit="s", description=description, explicit_bucket_boundaries_advisory=DURATION_BUCKETS
                )
                for name, (description, _) in METRICS.items()
            }
        self._max_series = max_series_per_metric
        # metric -> its admitted series, each key -> itself: one key object per series, so that
        # the histograms' lookups by it are identity hits
        self._series: dict[str, dict[Key, Key]] = {name: {} for name in METRICS}
        # what a Call's data point attributes are made from (``_inputs``) -> (attributes, series
        # key), for admitted series only: a Call seen before builds no dict and no frozenset.
        # Bounded: cleared when it holds as many entries as the caps allow series in all.
        self._memo: dict[tuple[Any, ...], tuple[dict[str, Any], Key]] = {}
        self._memo_max = max(1, max_series_per_metric * len(METRICS))
        # the histograms' lock when they are ours: the counters and the value in one acquisition
        self._lock = self._own.lock if self.aggregated else threading.Lock()
        self._service_name = service_name
        self.recorded = 0
        self.overflowed = 0  # points that went to the overflow series
        self.skipped = 0  # calls with no metric in the conventions

    def attributes(self, call: Call, metric: str, service: Optional[str] = None) -> dict[str, Any]:
        """The (low-cardinality) data point attributes for ``call`` in ``metric``; ``service``:
        its service.name when the caller has it already (else looked up)."""
        source = call.attributes
        allowed = METRICS[metric][1]
        attrs = {key: source[key] for key in allowed if key in source}
        if call.conn is not None and _USES_CONNECTION[metric]:
            # what the Call says wins (connection_attributes only sets what is missing); only the
            # keys it decides on are copied, not the whole attribute dict
            ends = {key: source[key] for key in _FROM_CONNECTION if key in source}
            connection_attributes(ends, call.role, call.conn)
            for key in _FROM_CONNECTION:
                if key in ends and key in allowed:
                    attrs[key] = ends[key]
        if call.error_type:
            attrs["error.type"] = call.error_type
        attrs["service.name"] = service if service is not None else self._service_name(call)
        return attrs

    def _inputs(self, call: Call, metric: str, service: str) -> tuple[Any, ...]:
        """Everything ``attributes(call, metric, service)`` depends on, as a hashable key: equal
        keys, equal attribute dicts (same keys in the same order, same values)."""
        source = call.attributes
        inputs: list[Any] = [metric, service, call.error_type or None]
        for key in METRICS[metric][1]:
            inputs.append(source.get(key, _ABSENT))
        # the connection can only fill a missing server.address or server.port
        if call.conn is not None and _USES_CONNECTION[metric] and not (
            "server.address" in source and "server.port" in source
        ):
            ends = {key: source[key] for key in _FROM_CONNECTION if key in source}
            connection_attributes(ends, call.role, call.conn)
            inputs.append(ends.get("server.address", _ABSENT))
            inputs.append(ends.get("server.port", _ABSENT))
        return tuple(inputs)

    def record(self, call: Call, service: Optional[str] = None) -> bool:
        """Record one Call; False when no convention metric applies to it. ``service``: the
        Call's service.name when the caller looked it up already (the pipeline has)."""
        metric = metric_for(call)
        if metric is None:
            self.skipped += 1
            return False
        if service is None:
            service = self._service_name(call)
        inputs = self._inputs(call, metric, service)
        seconds = max(0, call.end_ns - call.start_ns) / 1e9
        known = self._memo.get(inputs)
        if known is not None:
            attrs, key = known
            with self._lock:
                self.recorded += 1
                if self.aggregated:
                    self._own.add(metric, key, attrs, seconds)
        else:
            attrs = self.attributes(call, metric, service)
            key = frozenset(attrs.items())
            with self._lock:
                series = self._series[metric]
                admitted = series.get(key)
                if admitted is not None:
                    key = admitted
                elif len(series) >= self._max_series:
                    attrs, key = OVERFLOW, _OVERFLOW_KEY
                    self.overflowed += 1
                else:
                    series[key] = key
                    admitted = key
                self.recorded += 1
                if self.aggregated:
                    self._own.add(metric, key, attrs, seconds)
            if admitted is not None:  # an overflowing Call stays out: the memo only holds series
                if len(self._memo) >= self._memo_max:
                    self._memo.clear()
                self._memo[inputs] = (attrs, key)
        if not self.aggregated:
            self._histograms[metric].record(seconds, attrs)
        return True
