"""The agent's lifecycle: config -> kernel readiness -> probes -> READY -> poll loop -> drain.

Threads: during start-up bcc compiles on a thread of its own while the main thread builds the
rest (hostagent.kernel.background); the main thread runs the ring-buffer poll loop and the whole
pipeline (one thread, no hand-off per event); the export queue has its own worker; the watchdog
pings from its own thread only while the poll loop keeps beating; the admin API runs in gRPC's
pool. Signals only set flags that the poll loop acts on between polls (Python runs handlers on
the main thread).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from hostagent import __version__
from hostagent.config import AgentConfig, Config, ConfigError, load_config
from hostagent.notify import Notifier, Watchdog, watchdog_interval_s
from hostagent.settings import RuntimeSettings, SettingsHolder

log = logging.getLogger("hostagent")

# The ring is drained every 50 ms: events are submitted without wake-ups, and the kernel wakes the
# loop sooner only when the ring fills past a quarter. Each turn costs CPU whatever it drains (the
# wake-up, the loop, the pipeline's code and data brought back into caches the apps used since):
# ~180 us a turn beside Flask on the bench VM, so at 10 ms the poll thread spent ~7 us more per span
# at 1k req/s (bench/README, eighteenth round). A span leaves up to 40 ms later; nothing waits on it.
# Measured again beside Flask (twenty-seventh round, 6 alternated rounds each): 25 ms cost the agent
# +11 us per request (62 -> 74, 6 of 6), 100 ms saved 4 (60 -> 57, 5 of 6), ~1 ms a turn on a slow
# hour; neither moved gunicorn's throughput, which the agent's threads do not limit (its process
# stopped with the programs attached, Flask kept the same ratio to plain).
POLL_INTERVAL_S = 0.05
STATUS_EVERY_S = 5.0
# Stopping must end well inside the unit's TimeoutStopSec (30 s) even with the collector down, when
# every export retries with backoff: spans get this long (plus 2 s for an export in flight to be
# aborted), then the last metric points what is left of STOP_BUDGET_S (at least METRICS_FLUSH_MIN_S).
STOP_FLUSH_TIMEOUT_S = 8.0
STOP_BUDGET_S = 14.0
METRICS_FLUSH_MIN_S = 1.0
# Nothing listening at the collector's address when the stop begins: no retry can deliver, so the
# spans get this long (an export in flight is aborted) and the metric points METRICS_FLUSH_MIN_S.
STOP_FLUSH_REFUSED_S = 1.0
LOSSES_OF_CAPTURE = {
    "parser_truncated": "capture_truncated",  # a message head beyond the captured prefix
    "parser_unpaired": "capture_unpaired",  # a request or response without its counterpart
    "parser_resyncs": "capture_resync",  # bytes skipped to find the next message
    "evicted": "capture_evicted",  # connection state dropped by the LRU bound
}

# The tracker's counts of what detection made of connections (rejected_<protocol>: detected, then
# proved not to be it, e.g. a memcached line taken for a Redis inline command).
CONNECTION_COUNTS = ("detected_", "rejected_", "unknown", "upgraded")


def settings_from_config(config: Config) -> RuntimeSettings:
    return RuntimeSettings(probes=frozenset(config.probes.enabled), sampling=config.sampling,
                           redaction=config.redaction, capture=config.capture.runtime)


def console_wanted(config: Config) -> bool:
    """auto: a foreground run shows calls on the console; under systemd it would flood the journal."""
    if config.agent.console == "on" or not config.exporter.endpoint:
        return True
    if config.agent.console == "off":
        return False
    return not (os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"))


class Agent:
    def __init__(self, config: Config, notifier: Optional[Notifier] = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.started = time.monotonic()
        self.settings = SettingsHolder(settings_from_config(config))
        self.stop_requested = False
        self.reload_requested = False
        self.probes_wanted: Optional[frozenset[str]] = None
        self.heartbeat = time.monotonic()
        self.kernel_info: dict[str, str] = {}
        self.capture: Any = None
        self.queue: Any = None
        self.pipeline: Any = None
        self.admin: Any = None
        self.identity: Any = None
        self.metrics: Any = None
        self.watchdog: Optional[Watchdog] = None
        self.idle_guard: Any = None  # hostagent.priority.IdleGuard at cpu_policy idle
        self.backoff: Any = None  # hostagent.overload.OverloadBackoff unless [agent] overload_duty = 1
        self.probe_states: dict[str, Any] = {}
        # the enabled probes the capture was last attached/detached for (the admin API's
        # SetProbeEnabled answers once this matches the settings: the state after the change)
        self.probes_applied: Optional[frozenset[str]] = None
        self.exporter_endpoint = ""
        self.compiling: Any = None  # hostagent.kernel.background.BackgroundCompile, once started
        self.starvation: Any = None  # hostagent.starvation.StarvationWatch, once READY
        self._ring_age: Any = None  # hostagent.starvation.RingAge, the watch's samples

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        from hostagent import compiled
        from hostagent.kernel.background import begin_compile
        from hostagent.kernel.prepare import prepare_kernel
        from hostagent.memory import trim_heap

        t0 = time.monotonic()
        log.info("per-span stages: %s", compiled.STATE)
        Path(self.config.agent.runtime_dir).mkdir(parents=True, exist_ok=True)
        self.notifier.status("checking the kernel (tracefs, headers, bpf)")
        self.kernel_info = prepare_kernel(self.config)
        # bcc compiles C at load time: tell systemd start-up may take a while.
        self.notifier.extend_timeout(120)
        self.notifier.status("compiling and loading BPF programs")
        t_kernel = time.monotonic()
        # The compile is most of the start (seconds of clang/LLVM without the GIL): it runs on
        # its own thread from here, while this one imports and builds every other stage. LLVM's
        # freed memory goes back to the kernel on that thread as soon as it is done.
        self.compiling = begin_compile(self.config, after=trim_heap)
        from hostagent.assembly import build_pipeline

        parts = build_pipeline(self, self.compiling)
        self.capture, self.queue, self.pipeline = parts.capture, parts.queue, parts.pipeline
        self.identity = parts.identity
        self.metrics = parts.metrics
        self.exporter_endpoint = parts.exporter_description
        # The admin server re-applies persisted runtime changes (probes, sampling, redaction)
        # before the probes attach, so a restart comes back exactly as it was left.
        self.admin = parts.start_admin() if parts.start_admin else None
        t_built = time.monotonic()
        self.compiling.result()  # the compile's own exception, if it failed, ends the start here
        t_compiled = time.monotonic()
        self.settings.subscribe(self._on_settings_change)
        self.apply_probes(self.settings.current.probes)
        t_attached = time.monotonic()
        memory = release_start_up_memory()
        t_released = time.monotonic()
        # After the compile (READY is not delayed on a busy host); threads started later inherit it.
        self._apply_priority(self.config.agent)
        self.capture.watch_backlog(self._drain_progress)
        self._start_starvation_watch()
        interval = watchdog_interval_s()
        if interval:
            self.watchdog = Watchdog(self.notifier, interval, self.alive)
            self.watchdog.start()
        self.heartbeat = time.monotonic()  # the compile above is not a stall
        self.notifier.ready(self.status_line())
        began = process_started_at(t0)
        log.info(
            "start-up: READY %.2f s after the process began; the bcc compile started at %.2f s (kernel checks "
            "%.2f s) and took %.2f s on its own thread while the pipeline and admin server were built (%.2f s); "
            "waited %.2f s for it; attach %.2f s; memory handed back in %.2f s: %s",
            time.monotonic() - began, self.compiling.started_at - began, t_kernel - t0,
            self.compiling.capture.compile_seconds, t_built - t_kernel, t_compiled - t_built,
            t_attached - t_compiled, t_released - t_attached, memory,
        )
        log.info("ready: %s", self.status_line())

    def _on_settings_change(self, old: RuntimeSettings, new: RuntimeSettings) -> None:
        # Called on the admin API's thread: attach/detach happens on the poll thread, which owns
        # the BPF object, within one poll interval. Spans of a disabled probe stop at once anyway
        # (the pipeline checks the settings per call).
        if old.probes != new.probes:
            self.probes_wanted = new.probes

    def apply_probes(self, enabled: frozenset[str]) -> None:
        states = self.capture.apply_probes(enabled)
        if self.pipeline is not None:
            # now, on this (the poll) thread: a socket muted in the kernel while its probe was off
            # sends no event that would let the tracker notice the probe is back on
            self.pipeline.tracker.refresh()
        self.probe_states = states
        self.probes_applied = enabled
        for name, state in sorted(self.probe_states.items()):
            level = logging.ERROR if state.state == "failed" else logging.INFO
            log.log(level, "probe %s: %s%s", name, state.state, f" ({state.reason})" if state.reason else "")

    # -- status ------------------------------------------------------------------------------
    def attached_count(self) -> int:
        return sum(1 for s in self.probe_states.values() if s.state == "attached")

    def drops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.capture is not None:
            out.update(self.capture.drop_counts())
        if self.pipeline is not None:
            out.update(self.pipeline.dropped)
            stats = self.pipeline.tracker.stats()
            # Bytes the kernel did not copy (payload_bytes too small) or that could not be framed
            # cost calls: counted here so that such a loss is never silent.
            for key, cause in LOSSES_OF_CAPTURE.items():
                out[cause] = stats.get(key, 0)
            out["in_flight_at_stop"] = stats.get("in_flight_at_stop", 0)
        if self.queue is not None:
            out.update(self.queue.drop_counts())
        return {k: v for k, v in out.items() if v}

    def connection_counts(self) -> dict[str, int]:
        """What protocol detection made of the connections seen (hostagentctl status)."""
        if self.pipeline is None:
            return {}
        stats = self.pipeline.tracker.stats()
        return {k: v for k, v in stats.items() if k.startswith(CONNECTION_COUNTS) and v}

    def status_line(self) -> str:
        target = self.exporter_endpoint or "nowhere (console only)"
        drops = self.drops()
        # capture_* are calls seen only in part (payload_bytes too small, framing lost): counted
        # apart, since most are bodies cut short, not lost calls
        partial = sum(v for k, v in drops.items() if k.startswith("capture_"))
        dropped = sum(drops.values()) - partial
        failed = sorted(name for name, st in self.probe_states.items() if st.state == "failed")
        problems = f" ({', '.join(failed)} failed: see hostagentctl status)" if failed else ""
        line = f"{self.attached_count()} probes attached{problems}, exporting to {target}, {dropped} dropped"
        if partial:
            line += f", {partial} partly captured"
        guard = self.idle_guard
        if guard is not None and guard.raised:  # systemctl status shows the floor at work
            line += f", behind: at nice {guard.nice} until drained"
        backoff = self.backoff
        if backoff is not None and backoff.resting:
            line += f", overloaded: working {backoff.duty:.0%} of the time"
        return line

    def cpu_effort(self) -> str:
        """The agent's CPU priority, its floor and the overload backoff, in words (hostagentctl status)."""
        agent = self.config.agent
        guard, backoff = self.idle_guard, self.backoff
        if backoff is not None and backoff.resting:
            return (f"backed off: overloaded, working {backoff.duty:.0%} of the time "
                    f"(for {backoff.backed_off_s:.0f} s in all)")
        if guard is not None and guard.raised:
            return f"raised: behind, at nice {guard.nice} until drained"
        if guard is not None:
            return "idle (SCHED_IDLE)" + (": cannot leave it (no CAP_SYS_NICE)" if guard.refused else "")
        return f"normal (nice {agent.nice})"

    def alive(self) -> bool:
        """The poll loop beat recently (the watchdog pings only then)."""
        return time.monotonic() - self.heartbeat < 5.0

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> int:
        last_status = time.monotonic()
        cut = False  # the last drain used its whole budget: what it left is read without waiting
        while not self.stop_requested:
            backoff = self.backoff
            budget = backoff.burst_s() if backoff is not None else None
            began = time.monotonic()
            self.capture.poll(0 if cut else POLL_INTERVAL_S, budget)
            now = time.monotonic()
            # (a budget only comes with a backoff; while it rests, its rests pace the drains)
            cut = budget is not None and now - began >= budget and not backoff.resting
            self.heartbeat = now
            if self.pipeline is not None:
                # muted connections judged on a lossy stream send nothing that would get them retried
                self.pipeline.tracker.retry_unknown(time.monotonic_ns())
            if backoff is not None:
                self._pace(backoff, now, now - began if budget is not None else 0.0)
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            if self.probes_wanted is not None:
                wanted, self.probes_wanted = self.probes_wanted, None
                self.apply_probes(wanted)
            if now - last_status >= STATUS_EVERY_S:
                last_status = now
                self.notifier.status(self.status_line())
        self.shutdown()
        return 0

    def _apply_priority(self, agent: AgentConfig) -> None:
        """[agent] nice and cpu_policy on every thread, at idle the floor that raises them while
        the agent is behind, and the backoff for when it is hopelessly behind (overload_duty)."""
        from hostagent.overload import OverloadBackoff
        from hostagent.priority import IdleGuard, set_priority

        log.info("cpu priority: %s", set_priority(agent.nice, agent.cpu_policy))
        self.idle_guard = (IdleGuard(agent.nice, starved_after_s=agent.starved_after_ms / 1000)
                           if agent.cpu_policy == "idle" else None)
        duty = agent.overload_duty
        self.backoff = OverloadBackoff(duty, time.monotonic()) if duty < 1.0 else None

    def _start_starvation_watch(self) -> None:
        """The idle policy's second floor (hostagent.starvation): running whatever the policy, since
        a reload may change it; at cpu_policy normal it only reads the clock."""
        from hostagent.starvation import RingAge, StarvationWatch

        self._ring_age = RingAge()
        self.starvation = StarvationWatch(self.longest_wait, self._starved)
        self.starvation.start()

    def longest_wait(self) -> tuple[str, float]:
        """What has waited longest for the agent's threads, and for how long (hostagent.starvation)."""
        now = time.monotonic()
        waits = [("the poll loop", now - self.heartbeat)]
        positions = self.capture.ring_positions() if self.capture is not None else None
        if positions is not None and self._ring_age is not None:
            waits.append(("the oldest unread event", self._ring_age.sample(now, *positions)))
        if self.queue is not None:
            waits.append(("spans due for export", self.queue.overdue_s(now)))
        return max(waits, key=lambda w: w[1])

    def _starved(self, what: str, waited_s: float) -> Optional[str]:
        guard = self.idle_guard
        return guard.starved(what, waited_s) if guard is not None else None

    def _pace(self, backoff: Any, now: float, burst_s: float) -> None:
        """Hopeless overload (hostagent.overload): once a window the kernel's ring-full drops
        against the records read; while backed off, a rest after each burst and the floor held."""
        guard = self.idle_guard
        backoff.note_effort(guard is None or guard.full_effort)
        if backoff.due(now):
            dropped = self.capture.drop_counts().get("kernel_ringbuf_full", 0)
            window = backoff.last_window
            said = backoff.observe(now, self.capture.records_read(), dropped)
            if backoff.last_window is not window and log.isEnabledFor(logging.DEBUG):
                w = backoff.last_window
                log.debug("cpu effort window: %.2f s, %d read, %d dropped (%.0f%%), %s; now %s", w.seconds, w.read,
                          w.dropped, 100 * w.loss, "full effort" if w.full_effort else "not at full effort",
                          backoff.state)
            if said:
                (log.warning if backoff.resting else log.info)("cpu effort: %s", said)
            if guard is not None:
                lowered = guard.hold(backoff.resting)
                if lowered:
                    log.info("cpu priority: %s", lowered)
            # backed off, the programs a shed call has no use for are detached (BpfCapture.set_backed_off)
            self.capture.set_backed_off(backoff.resting)
        rest = backoff.rest_after(burst_s)
        if rest > 0:
            end = time.monotonic() + rest
            while not (self.stop_requested or self.reload_requested or self.probes_wanted is not None):
                left = end - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, 0.1))
            self.heartbeat = time.monotonic()

    def _drain_progress(self, backlog: float) -> None:
        """Before a drain and between its steps: a long drain (far behind, or on a starved CPU
        before the idle policy's floor raises the agent) is the loop making progress, not a stall
        for the watchdog; and the floor sees how far behind the agent is."""
        self.heartbeat = time.monotonic()
        guard = self.idle_guard
        if guard is None:
            return
        said = guard.observe(backlog)
        if said:
            (log.warning if guard.refused else log.info)("cpu priority: %s", said)

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file; on error keep running with the old one and say why."""
        self.notifier.reloading()
        try:
            config = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            self.notifier.ready(self.status_line())
            return False, str(exc)
        a, b = config.agent, self.config.agent
        if (a.nice, a.cpu_policy, a.overload_duty, a.starved_after_ms) != (
                b.nice, b.cpu_policy, b.overload_duty, b.starved_after_ms):
            self._apply_priority(config.agent)
        old_exporter = self.config.exporter
        self.config = config
        if config.exporter != old_exporter:
            self._reload_exporter(config)
        if self.pipeline is not None:
            self.pipeline.trace_telemetry = config.capture.telemetry_calls
        base = settings_from_config(config)
        if self.admin is not None and hasattr(self.admin, "reapply_persisted"):
            base = self.admin.reapply_persisted(base)
        self.settings.update(lambda old: replace(base, generation=old.generation))
        log.info("reloaded %s", config.path)
        self.notifier.ready(self.status_line())
        return True, ""

    def _reload_exporter(self, config: Config) -> None:
        """New [exporter] settings reach the export process (hostagent.export.process) between two
        batches. Anything else about the span exporter (the protocol, the endpoint turned on or off,
        the process on or off) still needs a restart, as in-process exporters do."""
        from hostagent.assembly import exporter_kwargs
        from hostagent.export.otlp import make_otlp_exporter

        process = getattr(self.queue, "export_process", None)
        exp = config.exporter
        if process is None or not exp.endpoint or exp.protocol != "grpc" or not exp.process:
            log.warning("reload: the span exporter's settings changed; they take effect at the next restart")
            return
        kwargs = exporter_kwargs(config)
        try:
            fallback = make_otlp_exporter(**kwargs, exact_endpoint=exp.endpoint_is_signal_specific)
        except (OSError, ValueError) as exc:
            log.error("reload: the new exporter settings cannot be used, keeping the old ones: %s", exc)
            return
        process.reconfigure(dict(kwargs, exact_endpoint=exp.endpoint_is_signal_specific), fallback)
        self.exporter_endpoint = f"{kwargs['endpoint']} ({exp.protocol})" + (
            " + console" if self.exporter_endpoint.endswith("+ console") else "")
        log.info("reload: spans now exported to %s", kwargs["endpoint"])

    def _collector_refuses(self) -> bool:
        """At stop: is the collector's address refusing connections (nothing listens)? Said in the
        log, since what waits for it is then counted as dropped without the full wait."""
        from hostagent.export.otlp import refuses_connections

        exporter = self.config.exporter
        if self.queue is None or not exporter.endpoint:
            return False
        if not refuses_connections(exporter.endpoint, exporter.protocol):
            return False
        log.warning("stopping: the collector at %s refuses connections; not waiting for it (what it "
                    "has not taken is counted as dropped)", exporter.endpoint)
        return True

    def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: detaching probes and flushing spans")
        started = time.monotonic()
        if self.starvation is not None:  # the poll loop no longer beats: IdleGuard.stopping instead
            self.starvation.stop()
        if self.idle_guard is not None:
            said = self.idle_guard.stopping()
            if said:
                log.info("cpu priority: %s", said)
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.admin is not None:
            self.admin.stop()
        if self.compiling is not None:
            self.compiling.wait()  # a start that failed elsewhere: LLVM must not run on while Python exits
        if self.capture is not None:
            self.capture.poll(0)  # what the kernel already captured still becomes spans
            self.capture.close()
        if self.pipeline is not None and hasattr(self.pipeline.tracker, "close_all"):
            self.pipeline.tracker.close_all(time.monotonic_ns())  # counted: see ConnectionTracker.close_all
        refused = self._collector_refuses()
        if self.queue is not None:
            self.queue.shutdown(STOP_FLUSH_REFUSED_S if refused else STOP_FLUSH_TIMEOUT_S)
        spans_done = time.monotonic()
        if self.identity is not None:
            self.identity.stop()
        if self.metrics is not None:
            left_s = METRICS_FLUSH_MIN_S if refused else max(
                METRICS_FLUSH_MIN_S, STOP_BUDGET_S - (time.monotonic() - started))
            self.metrics.provider.shutdown(timeout_millis=left_s * 1000)  # exports the last RED points
        drops = self.drops()
        lost = {k: v for k, v in drops.items() if not k.startswith("capture_")}
        partial = {k: v for k, v in drops.items() if k.startswith("capture_")}
        now = time.monotonic()
        log.info("stopped; dropped: %s; partly captured: %s; in %.1f s (spans flushed in %.1f s)",
                 lost or "nothing", partial or "nothing", now - started, spans_done - started)


def process_started_at(now_monotonic: float) -> float:
    """The monotonic time this process began (its start in /proc is in clock ticks since boot),
    so that the start-up line counts the interpreter's own start and the imports too."""
    from hostagent.identity.procfs import stat_fields

    try:
        with open("/proc/self/stat") as f:
            ticks = int(stat_fields(f.read())[19])  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return now_monotonic
    age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - age


def release_start_up_memory() -> str:
    """Hand back what only the start needed: LLVM's freed heap, and the compiler libraries'
    resident pages (attach and detach load programs already compiled: nothing runs them again;
    if anything did, the kernel would read them back in)."""
    from hostagent.memory import freeze_start_up_objects, page_out_libraries, rss_kib, trim_heap

    before = rss_kib()
    frozen = freeze_start_up_objects()  # before the trim: what the collection frees goes back too
    trim_heap()
    paged = page_out_libraries()
    return (f"RSS {before >> 10} -> {rss_kib() >> 10} MiB ({paged >> 10} MiB of compiler code paged out); "
            f"{frozen} start-up objects frozen out of the cyclic GC")


def _admin_config_error() -> type[Exception]:
    """Imported only once a start failed: the admin server pulls in gRPC, a third of a second
    that would otherwise delay the compile."""
    from hostagent.admin.server import AdminConfigError

    return AdminConfigError


def run_agent(config: Config) -> int:
    from hostagent.kernel import KernelNotReady

    agent = Agent(config)

    def on_term(signum: int, _frame: object) -> None:
        agent.stop_requested = True

    def on_hup(signum: int, _frame: object) -> None:
        agent.reload_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    log.info("hostagent %s starting with %s", __version__, config.path)
    try:
        agent.start()
    except (KernelNotReady, ConfigError, _admin_config_error()) as exc:
        log.error("%s", exc)
        print(f"hostagent: {exc}", file=sys.stderr)
        agent.notifier.status(f"failed: {exc}")
        agent.shutdown()
        return 1
    except BaseException:
        # Anything else (bcc's "Failed to compile BPF module") ends the start as it always did:
        # raised, with its traceback, exit status 1. The threads started meanwhile (admin
        # server, exporters) are stopped first: they would keep the process alive.
        agent.shutdown()
        raise
    return agent.run()

