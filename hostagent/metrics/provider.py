"""The agent's MeterProvider: one periodic OTLP export of RED and self metrics.

The Resource is the agent's own (service.name "hostagent" on this host), built directly so the
agent's OTEL_RESOURCE_ATTRIBUTES do not sneak in unasked; traced services are data point
attributes (see red.py).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Optional

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

import hostagent


def agent_resource(extra: Optional[dict[str, str]] = None) -> Resource:
    attrs = {
        "service.name": "hostagent",
        "service.version": hostagent.__version__,
        "host.name": socket.gethostname(),
        "os.type": "linux",
        "telemetry.sdk.name": "hostagent",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": hostagent.__version__,
    }
    attrs.update(extra or {})
    return Resource(attrs)


def make_meter_provider(
    exporter: Optional[MetricExporter] = None,
    interval_s: float = 15.0,
    resource: Optional[Resource] = None,
    extra_readers: Sequence[MetricReader] = (),
) -> MeterProvider:
    """A MeterProvider exporting every ``interval_s`` to ``exporter`` (and any extra readers)."""
    readers: list[MetricReader] = list(extra_readers)
    if exporter is not None:
        readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000))
    return MeterProvider(metric_readers=readers, resource=resource or agent_resource())
