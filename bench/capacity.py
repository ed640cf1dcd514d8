"""Capacity of the agent's user-space pipeline on one core, and where its time goes.

1. Record: load bpf/capture.c (the real BpfCapture), drive nginx with wrk for a moment and keep
   every ring-buffer record as the raw bytes the kernel wrote (one per syscall event).
2. Replay: feed those exact records, through the same ``decode_at`` the ring reader uses (in
   place, from one buffer holding them all), into the daemon's real pipeline --
   tracker, HTTP/1 parser, identity (ServiceCache on the live /proc), redaction, span building,
   sampling, the export queue and the real OTLP/gRPC exporter to a counting receiver in another
   process. The replay process is pinned to one CPU; its own CPU time (all threads: pipeline and
   exporter) divided by the transactions it turned into exported spans is the cost per
   transaction, and its inverse the capacity on one core.
3. Profile: the same replay under cProfile (pipeline thread) plus the exporter's time measured
   around each ``export()`` call (on the export thread), grouped by stage.

A "transaction" is one HTTP request/response seen by one traced process, i.e. one span: wrk ->
nginx gives two per request (wrk's client span and nginx's server span).
"""

from __future__ import annotations

import cProfile
import inspect
import os
import pstats
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from bench.load import run_wrk
from hostagent.probes import events as ev

Recording = list[bytes]


@contextmanager
def raw_recording(workdir: Path) -> Iterator[tuple[Recording, Any]]:
    """The real BpfCapture attached (socket and process groups) for the block, every ring-buffer
    record kept as the raw bytes the kernel wrote, drained on a thread; (records, capture). The
    records of the block's last 0.1 s are drained before the programs are detached."""
    from hostagent.probes.loader import BpfCapture
    from hostagent.probes.registry import PROCESS_GROUP, SOCKET_GROUP

    records: Recording = []
    # raw_records: on_event gets each record's bytes as the kernel wrote them
    bpf = BpfCapture(on_event=records.append, runtime_dir=workdir / "run", raw_records=True)  # type: ignore[arg-type]
    bpf.load()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            bpf.poll(10)
        bpf.poll(0)

    try:
        bpf.attach({SOCKET_GROUP, PROCESS_GROUP})
        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        try:
            yield records, bpf
            time.sleep(0.1)
        finally:
            stop.set()
            thread.join()
    finally:
        bpf.close()


def record(workdir: Path, url: str, seconds: float, rate: float, conns: int,
           load_cpu: Optional[str], close: bool = False) -> tuple[Recording, dict[str, Any]]:
    """Raw ring-buffer records captured while wrk drives ``url`` at ``rate`` requests/s (with
    ``close``: a new connection per request), and the kernel time our programs took per request
    meanwhile (bench/probe_time.py)."""
    from bench import probe_time

    with raw_recording(workdir) as (records, bpf):
        fds = {name.decode(): fn.fd for name, fn in bpf._bpf.funcs.items()}
        with probe_time.stats_enabled():
            before = probe_time.snapshot(fds)
            res = run_wrk(url, seconds=seconds, conns=conns, rate=rate, cpus=load_cpu, workdir=workdir,
                          close=close)
            after = probe_time.snapshot(fds)
        probe = probe_time.per_request(before, after, res.requests)
        drops = {k: v for k, v in bpf.drop_counts().items() if v}
    return records, {"requests": res.requests, "rps": res.rps, "probe": probe,
                     **{f"drop_{k}": v for k, v in drops.items()}}


def remap_pids(records: Recording, mapping: dict[int, int]) -> Recording:
    """Records of processes that are gone (wrk, once it exits) get a live process's pid, so identity
    finds a live process as it would in the daemon (a dead pid would be a cache miss per call,
    which the daemon never sees at this rate). Distinct pids stay distinct (their fds would clash)."""
    out = []
    for r in records:
        pid = int.from_bytes(r[24:28], "little")
        to = mapping.get(pid)
        if to is not None:
            b = bytearray(r)
            tid = int.from_bytes(r[28:32], "little")
            b[24:28] = to.to_bytes(4, "little")
            if tid == pid:
                b[28:32] = to.to_bytes(4, "little")
            r = bytes(b)
        out.append(r)
    return out


def record_pids(records: Recording) -> list[int]:
    """Pids in the recording, most events first."""
    from collections import Counter

    return [p for p, _ in Counter(int.from_bytes(r[24:28], "little") for r in records).most_common()]


class _TimedExporter:
    """Wraps the real exporter to measure the export thread's CPU time inside export()."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cpu_s = 0.0
        self.calls = 0

    def export(self, batch: Any) -> Any:
        t0 = time.thread_time()
        try:
            return self.inner.export(batch)
        finally:
            self.cpu_s += time.thread_time() - t0
            self.calls += 1

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def build(workdir: Path, endpoint: str, max_queue: int) -> tuple[Any, Any, _TimedExporter, Any, Any, Any]:
    """The daemon's pipeline stages, as hostagent.assembly wires them, minus the BPF side:
    (pipeline, export queue, timed exporter, identity, layering, metrics or None); ``stop`` takes
    them down after the queue (a compiled Pipeline takes no attributes of ours)."""
    from hostagent.assembly import build_identity, make_exporters
    from hostagent.capture.tracker import ConnectionTracker
    from hostagent.config import load_config
    from hostagent.daemon import settings_from_config
    from hostagent.export.queue import ExportQueue
    from hostagent.pipeline import Pipeline
    from hostagent.policy.redaction import PiiCounters, load_or_create_key
    from hostagent.protocols.registry import for_probes
    from hostagent.receiver.wiring import Layering
    from hostagent.settings import SettingsHolder
    from hostagent.traces.clock import MonotonicToUnix
    from hostagent.traces.spans import SpanBuilder
    from tests.support.agent import write_config

    cfg_path = write_config(workdir / "replay.toml", {
        "agent": {"state_dir": str(workdir / "state"), "runtime_dir": str(workdir / "run"), "console": "off"},
        "exporter": {"endpoint": endpoint, "protocol": "grpc"},  # RED metrics on, as shipped
        "probes": {"enabled": ["http"]},
    })
    config = load_config(cfg_path)
    exporters = make_exporters(config, console=False)[0]  # (OTLP exporters, console, description)
    timed = _TimedExporter(exporters[0])
    queue = ExportQueue([timed], max_queue=max_queue, batch_size=config.exporter.batch_size).start()  # type: ignore[list-item]
    built: Any = build_identity(config)
    identity: Any = getattr(built, "cache", built)  # assembly.Identity (cache + peers) or the cache itself
    extra: dict[str, Any] = {}
    if getattr(built, "peers", None) is not None and "peers" in inspect.signature(Pipeline).parameters:
        extra["peers"] = built.peers
    if "own" in inspect.signature(Pipeline).parameters:  # as the daemon: its own exports left out
        from hostagent.assembly import own_connections

        extra["own"] = own_connections(config)  # the exporter's port wired as the daemon wires it
    metrics = None
    if "metrics" in inspect.signature(Pipeline).parameters:  # RED metrics per call, as the daemon
        from hostagent.assembly import build_metrics

        metrics = build_metrics(config, identity, queue, dict)
        if metrics is not None:
            extra["metrics"] = metrics.red.record

    holder = SettingsHolder(settings_from_config(config))
    tracker = ConnectionTracker(lambda: for_probes(holder.current.probes))
    (workdir / "state").mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(workdir / "state")
    pii = PiiCounters()
    resource_for: Any
    layering_redactor: Callable[[], Any] = lambda: None  # noqa: E731
    try:  # as the daemon wires them (assembly): the Resource of the call's process, redacted
        from hostagent.policy.redaction import redactor_for
        from hostagent.policy.resource_redaction import RedactedResources

        # recent: the identity entries it reads first, as assembly wires it (a commit from before: none)
        recent = ({"recent": identity.recent} if "recent" in inspect.signature(RedactedResources).parameters
                  else {})
        resource_for = RedactedResources(identity.resource_of, holder, key, pii, **recent)
        layering_redactor = lambda: redactor_for(holder.current.redaction, key)  # noqa: E731
    except (ImportError, AttributeError):  # a commit from before them

        def resource_for(call: Any) -> Any:
            conn = call.conn
            return identity.resource_for(conn.pid, conn.comm) if conn is not None else identity.resource_for(0)

    class Sink:
        def enqueue(self, span: Any) -> bool:
            return queue.put(span)

    # Trace linking as the daemon runs it (hold, local client -> server links, its sweeper thread).
    layering = Layering(config, queue.put, layering_redactor, pii).start()
    pipeline = Pipeline(holder, tracker, SpanBuilder(MonotonicToUnix(), resource_for=resource_for).build,
                        Sink(), identity=identity, redaction_key=key, pii_counters=pii, linker=layering, **extra)
    return pipeline, queue, timed, built, layering, metrics


def stop(built: Any, layering: Any, metrics: Any) -> None:
    """What ``build`` started besides the export queue (shut down first, by the caller)."""
    layering.stop(1)
    if hasattr(built, "stop"):
        built.stop()
    if metrics is not None:
        metrics.provider.shutdown()


def _buffers(records: Recording) -> list[tuple[Any, int, int]]:
    """(buffer, offset, length) per record, all in one buffer: decoded in place by the same
    ``decode_at`` the loader runs over the ring's mapping."""
    whole = b"".join(records)
    out, off = [], 0
    for r in records:
        out.append((whole, off, len(r)))
        off += len(r)
    return out


def replay(workdir: Path, records: Recording, endpoint: str, repeat: int = 1,
           profile: bool = False) -> dict[str, Any]:
    """Runs the records through a fresh pipeline ``repeat`` times; CPU per span, spans/s."""
    pipeline, queue, timed, built, layering, metrics = build(workdir, endpoint, max_queue=len(records) * repeat + 1024)
    bufs = _buffers(records)
    decode, on_event = ev.decode_at, pipeline.on_event
    # Warm up identity (first sight of a pid reads /proc once, which never recurs per call).
    for buf, off, size in bufs[:200]:
        on_event(decode(buf, off, size))
    layering.linker.flush_all()
    queue.force_flush(30)
    base_exported, base_spans = queue.stats().exported, pipeline.spans
    export_cpu0 = timed.cpu_s
    prof = cProfile.Profile() if profile else None
    cpu0, wall0, thread0 = time.process_time(), time.perf_counter(), time.thread_time()
    if prof:
        prof.enable()
    for _ in range(repeat):
        for buf, off, size in bufs:
            on_event(decode(buf, off, size))
    if prof:
        prof.disable()
    layering.linker.flush_all()  # what the linker still holds, as at a stop
    producer_cpu = time.thread_time() - thread0
    queue.force_flush(120)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    st = queue.stats()
    spans = pipeline.spans - base_spans
    exported = st.exported - base_exported
    queue.shutdown(10)
    stop(built, layering, metrics)
    out: dict[str, Any] = {
        "events": len(bufs) * repeat, "spans": spans, "exported": exported,
        "dropped": dict(pipeline.dropped) | {"queue_full": st.dropped_queue_full,
                                             "export_failed": st.dropped_export_failed},
        "cpu_s": round(cpu, 4), "wall_s": round(wall, 4), "producer_cpu_s": round(producer_cpu, 4),
        "export_cpu_s": round(timed.cpu_s - export_cpu0, 4),
        "us_per_span": round(cpu / spans * 1e6, 2) if spans else None,
        "us_per_event": round(cpu / (len(bufs) * repeat) * 1e6, 2),
        "spans_per_cpu_s": round(spans / cpu) if cpu else None,
    }
    if prof:
        out["profile"] = summarize(prof, spans)
        out["profile_text"] = _top(prof)
    return out


# Stage -> functions whose *cumulative* time is that stage (the pipeline thread only).
STAGES = {
    "decode (ring record -> CaptureEvent)": ("decode.py", "decode_at"),
    "tracker + HTTP/1 parser": ("tracker.py", "handle"),
    "identity lookup": ("service.py", "service_for"),
    "RED metrics": ("red.py", "record"),
    "redaction": ("redaction.py", "apply"),
    "span build (incl. resource)": ("spans.py", "build"),
    "trace linking": ("linking.py", "offer"),
    "sampling": ("sampling.py", "decide"),
    "export queue put": ("queue.py", "put"),
}


def summarize(prof: cProfile.Profile, spans: int) -> dict[str, float]:
    """Microseconds per span in each stage (cProfile's cumulative time; profiling inflates all
    stages, so read the shares, not the absolute values)."""
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    total = 0.0
    for stage, (file, func) in STAGES.items():
        cum = sum(v[3] for k, v in raw.items() if k[0].endswith(file) and k[2] == func)
        out[stage] = round(cum / spans * 1e6, 2) if spans else 0.0
    for k, v in raw.items():
        if k[2] == "on_event" and k[0].endswith("pipeline.py"):
            total += v[3]
    out["pipeline total (on_event + decode)"] = round(
        (total + sum(v[3] for k, v in raw.items() if k[0].endswith("decode.py") and k[2] == "decode_at"))
        / spans * 1e6, 2) if spans else 0.0
    return out


def _top(prof: cProfile.Profile, n: int = 25) -> str:
    import io

    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(n)
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(n)
    return s.getvalue()


def pin_self(cpu: Optional[str]) -> None:
    if cpu:
        os.sched_setaffinity(0, {int(x) for x in cpu.split(",")})


def _offer_all(linker: Any, calls: list[Any], spans: list[Any]) -> None:
    for call, span in zip(calls, spans):
        linker.offer(call, span)


def stage_costs(workdir: Path, records: Recording, endpoint: str, passes: int = 3) -> dict[str, float]:
    """Microseconds per span of each stage, each timed alone (thread CPU time, no profiler) over
    the same recording: the stages' own costs without cProfile's inflation. Best of ``passes``."""
    from hostagent.capture.tracker import ConnectionTracker
    from hostagent.policy.redaction import redactor_for
    from hostagent.protocols.registry import for_probes
    from hostagent.traces.linking import LocalLinker

    pipeline, queue, timed, built, layering, metrics = build(workdir, endpoint, max_queue=1024)
    current = pipeline.settings.current
    identity = pipeline.identity
    bufs = _buffers(records)
    decode = ev.decode_at
    best: dict[str, float] = {}

    def clock(name: str, fn: Any, n_spans: int) -> Any:
        t0 = time.thread_time()
        out = fn()
        us = (time.thread_time() - t0) / max(n_spans, 1) * 1e6
        best[name] = round(min(best.get(name, us), us), 2)
        return out

    for _ in range(passes):
        events = [decode(buf, off, size) for buf, off, size in bufs[:50]]  # warm caches
        tracker = ConnectionTracker(lambda: for_probes(current.probes))
        calls_probe: list[Any] = []
        for e in events:
            calls_probe.extend(tracker.handle(e))
        tracker = ConnectionTracker(lambda: for_probes(current.probes))
        t0 = time.thread_time()
        events = [decode(buf, off, size) for buf, off, size in bufs]
        t_decode = time.thread_time() - t0
        handle = tracker.handle
        calls: list[Any] = []
        t0 = time.thread_time()
        for e in events:
            calls.extend(handle(e))
        t_track = time.thread_time() - t0
        n = len(calls)
        best["decode"] = round(min(best.get("decode", 1e9), t_decode / n * 1e6), 2)
        best["tracker + parser"] = round(min(best.get("tracker + parser", 1e9), t_track / n * 1e6), 2)
        names: list[Any] = [None] * n
        if identity is not None:
            found = clock("identity", lambda: [identity.service_for(c.conn.pid, c.conn.comm) for c in calls], n)  # noqa: B023
            names = [s.name for s in found]
        if metrics is not None:  # with the service.name the pipeline hands it
            clock("RED metrics", lambda: [metrics.red.record(c, s) for c, s in zip(calls, names)], n)  # noqa: B023
        redactor = redactor_for(current.redaction, pipeline.redaction_key)
        red = clock("redaction", lambda: [redactor.apply(c).call for c in calls], n)  # noqa: B023
        spans = clock("span build", lambda: [pipeline.build_span(c) for c in red], n)  # noqa: B023
        linker = LocalLinker(lambda call, span: None)
        clock("trace linking", lambda: _offer_all(linker, red, spans), n)  # noqa: B023
        enc = getattr(timed.inner, "_encoder", None)
        if enc is not None:
            clock("OTLP encode", lambda: [enc.encode(spans[i:i + 512]) for i in range(0, len(spans), 512)], n)  # noqa: B023
        else:
            from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

            clock("OTLP encode", lambda: [encode_spans(spans[i:i + 512]).SerializeToString()  # noqa: B023
                                          for i in range(0, len(spans), 512)], n)  # noqa: B023
    queue.shutdown(5)
    stop(built, layering, metrics)
    best["sum"] = round(sum(v for k, v in best.items() if k != "sum"), 2)
    return best
