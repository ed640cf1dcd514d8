"""Builds every stage from the config, all before anything starts (the daemon then starts them).

Kept apart from daemon.py so that the lifecycle (signals, sd_notify, the loop) reads on its
own, and so that what is wired to what is in one place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from opentelemetry.sdk.trace.export import SpanExporter

from hostagent.capture.tracker import ConnectionTracker
from hostagent.config import Config
from hostagent.export.console import ConsoleExporter
from hostagent.export.otlp import make_otlp_exporter
from hostagent.export.queue import ExportQueue
from hostagent.identity.own_sockets import OwnConnections, endpoint_port
from hostagent.kernel.background import BackgroundCompile
from hostagent.pipeline import Pipeline
from hostagent.policy.resource_redaction import RedactedResources
from hostagent.probes.loader import BpfCapture, ProbeState
from hostagent.probes.registry import PROCESS_GROUP, SOCKET_GROUP, groups_for
from hostagent.protocols.http_common import BodyLimit
from hostagent.protocols.registry import body_limit, for_probes
from hostagent.protocols.sql import RawSql
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder

if TYPE_CHECKING:
    from hostagent.daemon import Agent

log = logging.getLogger(__name__)

SOCKET_PROBES = ("http", "http2", "postgres", "mysql", "redis", "dns")


class Capture:
    """The BPF side as the daemon sees it: probe names in, per-probe states out."""

    def __init__(self, bpf: BpfCapture) -> None:
        self.bpf = bpf
        self.states: dict[str, ProbeState] = {}
        self._final_drops: Optional[dict[str, int]] = None

    def apply_probes(self, enabled: frozenset[str]) -> dict[str, ProbeState]:
        """Attach the program groups enabled probes need, detach the rest (gone from the kernel)."""
        wanted = groups_for(set(enabled) | {"identity"})
        for group in (SOCKET_GROUP, PROCESS_GROUP):
            if group not in wanted and self.bpf.states[group].state == "attached":
                self.bpf.detach(group)
        was_attached = self.bpf.states[SOCKET_GROUP].state == "attached"
        groups = self.bpf.attach(wanted)
        socket_state = groups[SOCKET_GROUP]
        if socket_state.state == "attached" and not was_attached:
            # sockets opened before (re-)attaching: a detached group stops maintaining the map
            self.bpf.seed_existing_sockets()
        self.states = {}
        for name in SOCKET_PROBES:
            if name not in enabled:
                self.states[name] = ProbeState("detached")
            else:
                self.states[name] = socket_state
        self.states["identity"] = groups[PROCESS_GROUP]
        return dict(self.states)

    def poll(self, timeout_s: float, budget_s: Optional[float] = None) -> int:
        return self.bpf.poll(int(timeout_s * 1000), budget_s)

    def watch_backlog(self, watch: Callable[[float], object]) -> None:
        """``watch(share of the ring unread)`` before each drain and between its steps."""
        size = self.bpf.ring_bytes
        self.bpf.on_backlog = lambda unread: watch(unread / size)

    def ring_positions(self) -> Optional[tuple[int, int]]:
        """(producer, consumer) positions of the ring, None when there is none (hostagent.starvation)."""
        return self.bpf.ring_positions()

    def records_read(self) -> int:
        """Records taken from the ring so far."""
        return int(self.bpf.events_seen)

    def set_backed_off(self, backed_off: bool) -> None:
        """The overload backoff's state (hostagent.overload): backed off, the socket path's programs
        that do nothing for a shed call are detached (BpfCapture.set_backed_off acts on a change only)."""
        self.bpf.set_backed_off(backed_off)

    def drop_counts(self) -> dict[str, int]:
        if self._final_drops is not None:
            return self._final_drops
        try:
            counts = self.bpf.drop_counts()
        except (KeyError, TypeError, OSError):  # not loaded (a failed start): nothing counted yet
            return {}
        return {f"kernel_{k}" if k != "callback_errors" else k: v for k, v in counts.items()}

    def close(self) -> None:
        self._final_drops = self.drop_counts()  # the maps go with the programs
        self.bpf.close()


class QueueSink:
    """The export queues as the pipeline's sink, with their drop counters for status.

    The console has a queue of its own: a collector that is down (retries block an exporter for
    seconds) must not hold back the live lines a person is watching.
    """

    def __init__(self, queue: ExportQueue, console: Optional[ExportQueue] = None) -> None:
        self.queue = queue  # the primary queue (OTLP; the console's own when there is no collector)
        self.console = console
        self.layering: Any = None  # hostagent.receiver.wiring.Layering, stopped (flushed) first
        self.export_process: Any = None  # hostagent.export.process.ChildExporter, when spans go through one

    def put(self, span: Any) -> bool:
        if self.console is not None:
            self.console.put(span)
        return self.queue.put(span)

    enqueue = put

    def put_function(self) -> Callable[[Any], bool]:
        """What each span is handed to: the queue's own ``put`` when there is no console queue
        (``put`` here is an interpreted call per span; the queue's is compiled)."""
        return self.put if self.console is not None else self.queue.put

    def drop_counts(self) -> dict[str, int]:
        s = self.queue.stats()
        out = {"export_queue_full": s.dropped_queue_full, "export_failed": s.dropped_export_failed,
               "export_shutdown": s.dropped_shutdown}
        if self.console is not None:
            out["console_queue_full"] = self.console.stats().dropped_queue_full
        if self.layering is not None:
            counters = self.layering.counters()
            out.update({k: v for k, v in counters.items() if k in _LAYERING_DROPS})
        return out

    def overdue_s(self, now: float) -> float:
        """How long the primary queue's spans have waited past their export (hostagent.starvation)."""
        return self.queue.overdue_s(now)

    def shutdown(self, timeout_s: float) -> bool:
        if self.layering is not None:
            self.layering.stop(min(timeout_s, 5.0))
        if self.console is not None:
            self.console.shutdown(min(timeout_s, 2.0))
        return self.queue.shutdown(timeout_s)


# Losses among the layering counters (the others -- links made, spans enriched -- are not drops).
_LAYERING_DROPS = frozenset({"forward_queue_full", "forward_failed", "forward_no_exporter",
                             "forward_dropped_at_stop"})


@dataclass
class Parts:
    capture: Capture
    queue: QueueSink
    pipeline: Pipeline
    exporter_description: str
    identity: Any = None
    metrics: Any = None
    start_admin: Optional[Callable[[], Any]] = None


def exporter_kwargs(config: Config) -> dict[str, Any]:
    """The [exporter] settings as the OTLP exporter factories take them (spans and metrics alike)."""
    exp = config.exporter
    endpoint = exp.endpoint
    if exp.protocol == "grpc" and "://" not in endpoint:
        endpoint = "http://" + endpoint
    return {
        "endpoint": endpoint, "protocol": exp.protocol, "headers": dict(exp.headers),
        "timeout_s": exp.timeout_ms / 1000, "compression": exp.compression,
        "certificate": exp.certificate or None, "client_certificate": exp.client_certificate or None,
        "client_key": exp.client_key or None, "insecure": exp.insecure,
    }


def otlp_span_exporter(config: Config, kwargs: dict[str, Any]) -> SpanExporter:
    """The OTLP span exporter: over gRPC with ``[exporter] process`` (off by default) a
    ChildExporter (hostagent.export.process) started now, the in-process exporter being its
    fallback; else that."""
    exp = config.exporter
    exporter = make_otlp_exporter(**kwargs, exact_endpoint=exp.endpoint_is_signal_specific)
    if exp.protocol != "grpc" or not exp.process:
        return exporter
    from hostagent import priority
    from hostagent.export.process import ChildExporter

    child = ChildExporter(dict(kwargs, exact_endpoint=exp.endpoint_is_signal_specific), exporter,
                          timeout_s=kwargs["timeout_s"])
    followed: list[int] = []  # the export process whose threads take the agent's priority

    def started(pid: int) -> None:
        """A new export process takes the agent's priority, now and at each change; its
        predecessor's pid is let go (it may be another process's by now)."""
        for old in followed:
            priority.unfollow(old)
        followed[:] = [pid]
        priority.follow(pid)

    child.on_child.append(started)
    return child.start()


def make_exporters(config: Config, console: bool) -> tuple[list[SpanExporter], Optional[SpanExporter], str]:
    """(OTLP exporters, the console exporter or None, a description for the status line)."""
    exp = config.exporter
    exporters: list[SpanExporter] = []
    description = ""
    if exp.endpoint:
        kwargs = exporter_kwargs(config)
        exporters.append(otlp_span_exporter(config, kwargs))
        description = f"{kwargs['endpoint']} ({exp.protocol})"
    console_exporter: Optional[SpanExporter] = None
    if console:
        console_exporter = ConsoleExporter()
        description = f"{description} + console" if description else "console"
    return exporters, console_exporter, description


def make_sink(config: Config, console: bool) -> tuple[QueueSink, str]:
    otlp, console_exporter, description = make_exporters(config, console)
    console_queue = None
    if console_exporter is not None:
        console_queue = ExportQueue([console_exporter], max_queue=config.exporter.queue_size, batch_size=64,
                                    delay_s=0.1, name="console-export").start()
    if not otlp and console_queue is not None:
        return QueueSink(console_queue), description
    queue = ExportQueue(otlp, max_queue=config.exporter.queue_size, batch_size=config.exporter.batch_size).start()
    sink = QueueSink(queue, console_queue)
    sink.export_process = next((e for e in otlp if hasattr(e, "reconfigure")), None)
    return sink, description


@dataclass
class Identity:
    """pid -> Service (with Docker metadata when the engine is there) and local listeners -> peers."""

    cache: Any
    peers: Any
    listeners: Any
    docker: Any
    sweeper: Any

    def stop(self) -> None:
        self.sweeper.cancel()
        self.listeners.stop()
        self.docker.stop()
        self.cache.stop()


class _Sweeper(threading.Thread):
    """Drops cache entries of processes that are gone (exits missed while detached, pid reuse)."""

    def __init__(self, cache: Any, every_s: float = 30.0) -> None:
        super().__init__(name="identity-sweep", daemon=True)
        self.cache, self.every_s = cache, every_s
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.cache.sweep()
            except Exception:
                log.exception("identity sweep failed")

    def cancel(self) -> None:
        self._stop.set()


def build_identity(config: Config) -> Identity:
    from hostagent.identity.docker import DockerMetadata
    from hostagent.identity.listeners import ListenerMap
    from hostagent.identity.naming import parse_service_rules
    from hostagent.identity.peers import PeerResolver
    from hostagent.identity.procfs import ProcFS
    from hostagent.identity.service import ServiceCache

    procfs = ProcFS("/")
    rules = parse_service_rules(list(config.services), config.path)
    docker = DockerMetadata()
    docker.start()
    cache = ServiceCache(procfs, docker=docker, rules=rules)
    listeners = ListenerMap(procfs, on_new_pid=cache.service_for)
    listeners.start()
    sweeper = _Sweeper(cache)
    sweeper.start()
    return Identity(cache=cache, peers=PeerResolver(listeners, cache.peek, cache.pids), listeners=listeners,
                    docker=docker, sweeper=sweeper)


def build_metrics(config: Config, cache: Any, queue: ExportQueue, drops: Callable[[], dict[str, int]]) -> Any:
    """RED metrics per call and the agent's own counters, exported over OTLP like the spans."""
    from hostagent.export.otlp import make_otlp_metric_exporter
    from hostagent.metrics.provider import make_meter_provider
    from hostagent.metrics.red import RedMetrics
    from hostagent.metrics.self_metrics import SelfMetrics

    exp = config.exporter
    if not (exp.metrics and exp.endpoint):
        return None
    exporter = make_otlp_metric_exporter(**exporter_kwargs(config))
    provider = make_meter_provider(exporter, interval_s=exp.metrics_interval_s)

    def service_name(call: Any) -> str:
        conn = call.conn
        if conn is None:
            return "unknown_service"
        return str(cache.service_for(conn.pid, conn.comm, conn.cgroup_id).name)

    red = RedMetrics(provider, service_name=service_name)
    self_metrics = SelfMetrics(provider)
    self_metrics.watch_queue(queue)
    for cause in ("kernel_ringbuf_full", "kernel_inflight_full", "kernel_mmsg_truncated", "kernel_h2_unwalked",
                  "pipeline_error", "callback_errors"):
        self_metrics.register_drops(cause, partial(_count_of, drops, cause))
    return Metrics(red=red, provider=provider)


def _count_of(drops: Callable[[], dict[str, int]], cause: str) -> int:
    return drops().get(cause, 0)


@dataclass
class Metrics:
    red: Any
    provider: Any


def own_connections(config: Config) -> Optional[OwnConnections]:
    """What tells a local collector's side of the agent's own exports (none without an exporter)."""
    exp = config.exporter
    if not exp.endpoint:
        return None
    port = endpoint_port(exp.endpoint, exp.protocol)
    return OwnConnections(ports=frozenset({port}) if port is not None else frozenset())


def connection_tracker(
    holder: SettingsHolder, mute: Callable[[int, int], None], unmute: Callable[[int, int], None],
) -> ConnectionTracker:
    """The tracker, parsing with the protocols the current settings enable; a settings change
    reaches it before the change is acknowledged (reload's READY, the admin API's answer).
    [capture] raw_sql is one switch its SQL parsers read per call, flipped here as well: the
    change applies to the next call of every connection, also one opened before it. So is the body
    bytes the HTTP parsers keep ([capture] body_max_bytes and bodies, overrides included)."""
    raw_sql = RawSql(holder.current.capture.raw_sql)
    bodies = BodyLimit(body_limit(holder.current.capture))

    def enabled_protocols() -> tuple[Any, ...]:
        return for_probes(holder.current.probes, raw_sql, bodies)

    tracker = ConnectionTracker(enabled_protocols, on_mute=mute, on_unmute=unmute)

    def changed(old: RuntimeSettings, new: RuntimeSettings) -> None:
        raw_sql.set(new.capture.raw_sql)
        bodies.value = body_limit(new.capture)
        tracker.settings_changed()

    holder.subscribe(changed)
    return tracker


def build_pipeline(agent: Agent, compiling: BackgroundCompile) -> Parts:
    """Every stage, wired; the BPF compile goes on meanwhile on its own thread (``compiling``):
    the capture in Parts is attachable only once ``compiling.result()`` has returned."""
    from hostagent.daemon import console_wanted
    from hostagent.policy.redaction import PiiCounters, load_or_create_key, redactor_for
    from hostagent.receiver.wiring import Layering

    config = agent.config
    sink, description = make_sink(config, console_wanted(config))
    own = own_connections(config)
    if own is not None and sink.export_process is not None:
        own.follow(sink.export_process)  # its exports are the agent's
    queue = sink.queue
    identity = build_identity(config)
    cache = identity.cache
    clock = MonotonicToUnix()
    holder = agent.settings
    state_dir = Path(config.agent.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    redaction_key = load_or_create_key(state_dir)
    pii = PiiCounters()
    resources = RedactedResources(cache.resource_of, holder, redaction_key, pii, recent=cache.recent)
    builder = SpanBuilder(clock, resource_for=resources)
    bpf = compiling.capture

    def mute(pid: int, fd: int) -> None:
        bpf.mute(pid, fd)

    def unmute(pid: int, fd: int) -> None:
        bpf.unmute(pid, fd)

    tracker = connection_tracker(holder, mute, unmute)
    red = build_metrics(config, cache, queue, agent.drops)
    layering = Layering(config, sink.put_function(), lambda: redactor_for(holder.current.redaction, redaction_key), pii)
    sink.layering = layering
    pipeline = Pipeline(
        holder, tracker, builder.build, sink,
        identity=cache,
        peers=identity.peers,
        metrics=red.red.record if red is not None else None,
        redaction_key=redaction_key,
        pii_counters=pii,
        linker=layering,
        # a collector on this host receiving the agent's exports: their spans are left out
        own=own,
        trace_telemetry=config.capture.telemetry_calls,
    )
    layering.start()
    bpf.on_event = pipeline.on_event  # read at every poll; nothing polls before start() attaches

    def start_admin() -> Any:
        from hostagent.admin.wiring import start_admin as start

        return start(agent, pipeline)

    return Parts(capture=Capture(bpf), queue=sink, pipeline=pipeline, exporter_description=description,
                 identity=identity, metrics=red, start_admin=start_admin)
