"""Glue between the daemon (hostagent.daemon.Agent) and the admin server: one call to start it.

    from hostagent.admin.wiring import start_admin
    admin = start_admin(agent, pipeline, tap)   # an AdminServer, already serving

Everything here reads the Agent by duck typing (config, settings, started, kernel_info,
probe_states, drops(), alive(), reload(), exporter_endpoint, queue) so the daemon can change
without this module importing it.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from hostagent import __version__
from hostagent.admin.server import AdminServer, TlsFiles
from hostagent.admin.status import AgentStatus, LayeringStatus, ProbeStatus
from hostagent.admin.tap import SpanTap, tap_observer

PROBE_NAMES = ("http", "http2", "postgres", "mysql", "redis", "dns")


class AgentStatusProvider:
    """AgentStatus from a running Agent and its Pipeline; events/s over the last call interval."""

    def __init__(self, agent: Any, pipeline: Any) -> None:
        self.agent = agent
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self._last = (time.monotonic(), 0)
        self._rate = 0.0

    def _events_per_second(self) -> float:
        events = int(getattr(self.pipeline, "events", 0))
        now = time.monotonic()
        with self._lock:
            then, before = self._last
            if now - then >= 1.0:
                self._rate = (events - before) / (now - then)
                self._last = (now, events)
            return self._rate

    def status(self) -> AgentStatus:
        agent, pipeline = self.agent, self.pipeline
        exported, last_error = 0, ""
        queue = getattr(getattr(agent, "queue", None), "queue", None)
        if queue is not None and hasattr(queue, "stats"):
            stats = queue.stats()
            exported, last_error = stats.exported, stats.last_error
        probes = tuple(
            ProbeStatus(name, getattr(st, "state", str(st)), getattr(st, "reason", ""))
            for name, st in sorted(getattr(agent, "probe_states", {}).items())
        )
        kernel = getattr(agent, "kernel_info", {}) or {}
        return AgentStatus(
            version=__version__,
            uptime_seconds=time.monotonic() - agent.started,
            kernel_release=kernel.get("kernel", ""),
            kernel_headers=kernel.get("headers", ""),
            probes=probes,
            probes_applied=getattr(agent, "probes_applied", None),
            events_per_second=self._events_per_second(),
            spans_exported=exported,
            drops=dict(agent.drops()),
            exporter_endpoint=getattr(agent, "exporter_endpoint", ""),
            exporter_last_error=last_error,
            redacted=pipeline.pii.snapshot() if hasattr(pipeline, "pii") else {},
            healthy=bool(agent.alive()),
            cpu_effort=agent.cpu_effort() if hasattr(agent, "cpu_effort") else "",
            connections=agent.connection_counts() if hasattr(agent, "connection_counts") else {},
            layering=layering_status(getattr(getattr(agent, "queue", None), "layering", None),
                                     own_traffic=int(getattr(pipeline, "own_traffic", 0)),
                                     telemetry_calls=int(getattr(pipeline, "telemetry_calls", 0))),
        )


def layering_status(layering: Any, own_traffic: int = 0, telemetry_calls: int = 0) -> LayeringStatus:
    """From hostagent.receiver.wiring.Layering (the QueueSink's ``layering``), or empty without one;
    the Pipeline's ``own_traffic`` (a local collector's side of the agent's own exports) and
    ``telemetry_calls`` (other processes' telemetry exports), both left out of the traces."""
    left_out = {k: v for k, v in (("agent_export_calls", own_traffic), ("telemetry_calls", telemetry_calls)) if v}
    if layering is None:
        return LayeringStatus(counters=left_out)
    held = layering.held() if hasattr(layering, "held") else {}
    linker = getattr(layering, "linker", None)
    return LayeringStatus(
        receiver_enabled=getattr(layering, "sdk", None) is not None,
        linking_enabled=bool(getattr(linker, "enabled", False)),
        counters={**{k: int(v) for k, v in layering.counters().items()}, **left_out},
        held_sdk_spans=int(held.get("sdk_spans", 0)),
        held_agent_spans=int(held.get("agent_spans", 0)),
    )


def start_admin(agent: Any, pipeline: Any, tap: Optional[SpanTap] = None) -> AdminServer:
    """Build and start the admin server for ``agent``; adds the tail observer to ``pipeline``.

    Raises hostagent.admin.server.AdminConfigError (message for the user) when the configured
    listener cannot start (e.g. TCP without [admin.tls]).
    """
    from hostagent.daemon import settings_from_config  # late: daemon imports the assembly

    tap = tap or SpanTap()
    if hasattr(pipeline, "add_observer"):  # called only while someone tails
        pipeline.add_observer(tap_observer(tap), tap)
    elif hasattr(pipeline, "observers"):
        pipeline.observers.append(tap_observer(tap))
    cfg = agent.config.admin
    server = AdminServer(
        holder=agent.settings,
        status=AgentStatusProvider(agent, pipeline),
        reload=agent.reload,
        base_settings=lambda: settings_from_config(agent.config),
        state_dir=agent.config.agent.state_dir,
        socket_path=cfg.socket,
        listen=cfg.listen,
        tls=TlsFiles.from_config(cfg.tls),
        token=cfg.token,
        group=cfg.group,
        tap=tap,
        probe_names=PROBE_NAMES,
        redaction_key=getattr(pipeline, "redaction_key", None) or None,
    )
    server.start()
    return server
