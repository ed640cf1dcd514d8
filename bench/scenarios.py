"""The measurements of issue 7, each a function returning plain dicts (JSON-ready).

CPU layout (2 cores here): the server under test on CPU 0 (``SERVER_CPU``); the load generator and
the OTLP receivers on CPU 1 (``LOAD_CPU``). In the overhead runs the agent is not pinned (as it
would run on a host: it takes CPU from whatever runs there, and its own CPU is reported apart, in
seconds per 1,000 requests). In the fidelity runs it is pinned to one CPU (``AGENT_CPU``, after
READY) so "one core" is what it has, shared with wrk and the OTLP receiver (whose CPU share is
reported beside the agent's).
Every comparison alternates configurations round by round (A/B/A/B) and keeps the median.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from bench.agent_proc import REPO, BenchAgent
from bench.load import WrkResult, run_wrk
from bench.procs import children, cpu_seconds, memory_kib, pinned
from bench.servers import Proc, gunicorn, nginx
from bench.sink_proc import Sink
from hostagent import compiled

SERVER_CPU = "0"
LOAD_CPU = "1"
AGENT_CPU = "1"
PORT_SINK, PORT_NGINX, PORT_FLASK, PORT_OTEL_SINK, PORT_PG, PORT_REDIS = 18900, 18901, 18902, 18903, 18904, 18905
PORT_CAP_NGINX, PORT_CAP_SINK = 18906, 18907
PORT_NGINX_STATUS = 18908  # nginx's stub_status: the requests it read (Proc.requests_read)


class Ctx:
    def __init__(self, workdir: Path, seconds: float, rounds: int, log: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.seconds = seconds
        self.rounds = rounds
        self.log = log
        # Kept across the bench's agent starts (systemd empties /run/hostagent at every stop): the
        # first start here is a first start (the start-up figures' "cold" one), the others warm.
        self.runtime_dir = workdir / "agent-run"
        self.starts: list[dict[str, Any]] = []
        self._n = 0
        # bench-quick: fewer side runs (only the default agent, one replay of the pure-Python stages)
        self.quick = False

    def agent(self, endpoint: str, probes: tuple[str, ...] = ("http",), runtime_dir: Optional[Path] = None,
              cpus: Optional[str] = None, agent_keys: Optional[dict[str, Any]] = None) -> BenchAgent:
        self._n += 1
        extra = {"agent": agent_keys} if agent_keys else None
        run_dir = runtime_dir or self.runtime_dir
        # no header tree there yet: the start builds it, as every start under systemd does
        cold = not (run_dir.is_dir() and any(run_dir.iterdir()))
        a = BenchAgent(self.workdir / f"agent-{self._n}", endpoint, runtime_dir=run_dir,
                       probes=probes, cpus=cpus, extra=extra).start()
        self.starts.append({"ready_s": round(a.ready_s, 3), "rss_mib": round(a.rss_after_start_kib / 1024, 1),
                            "cold": cold, **a.timings()})
        return a


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "round"]
    out: dict[str, Any] = {k: round(median([r[k] for r in runs if k in r]), 4) for k in keys}
    drops: dict[str, int] = {}
    for r in runs:
        for k, v in r.get("drops", {}).items():
            drops[k] = drops.get(k, 0) + v
    out["drops_total"] = drops
    out["rounds"] = runs
    return out


# ---- 1. traced-app overhead ------------------------------------------------------------------

def _tree_cpu_s(pid: int) -> float:
    return cpu_seconds(pid) + sum(_tree_cpu_s(c) for c in children(pid))


def _wrk_run(ctx: Ctx, url: str, conns: int, rate: Optional[float] = None,
             server_pid: Optional[int] = None, seconds: Optional[float] = None,
             counted_by: Optional[Proc] = None) -> WrkResult:
    """wrk against ``url`` for ``seconds`` (the run's by default); with ``server_pid``, the server
    tree's CPU seconds during the run too; with ``counted_by`` (nginx with its stub_status), the
    requests the server read."""
    cpu0 = _tree_cpu_s(server_pid) if server_pid else 0.0
    read0 = counted_by.requests_read() if counted_by else 0
    res = run_wrk(url, seconds=seconds or ctx.seconds, conns=conns, rate=rate, cpus=LOAD_CPU, workdir=ctx.workdir)
    if server_pid:
        res.server_cpu_s = _tree_cpu_s(server_pid) - cpu0
    if counted_by:
        res.served = counted_by.requests_read() - read0 - 1  # the count includes the read counting it
    return res


# config name -> the [agent] keys of the agent run under it ({}: as shipped, cpu_policy idle at nice 10)
AGENT_CONFIGS: dict[str, dict[str, Any]] = {
    "agent": {},
    "agent_nice10": {"cpu_policy": "normal"},  # the default before the twelfth round
    "agent_nice0": {"cpu_policy": "normal", "nice": 0},
}


def _agent_configs(ctx: Ctx) -> list[str]:
    """Full runs add the agent at nice 10 and at nice 0 (SCHED_OTHER: a share of a busy CPU by weight;
    at 0 equal with the apps) next to the default (SCHED_IDLE): what the
    priority is worth, measured in the same rounds."""
    return [c for c in AGENT_CONFIGS if c == "agent" or not ctx.quick]


def _with_agent(ctx: Ctx, server_port: int, run: Callable[[], WrkResult], spans_per_request: int = 2,
                probes: tuple[str, ...] = ("http",), cpus: Optional[str] = None,
                agent_keys: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    sink = Sink(ctx.workdir, PORT_SINK, cpus=LOAD_CPU, server_port=server_port)
    try:
        agent = ctx.agent(sink.endpoint, probes, cpus=cpus, agent_keys=agent_keys)
        try:
            cpu0, sink0 = agent.cpu_seconds(), cpu_seconds(sink.proc.pid)
            res = run()
            cpu = agent.cpu_seconds() - cpu0
            sink_cpu = cpu_seconds(sink.proc.pid) - sink0
            mem = agent.memory()
        finally:
            drops = agent.stop()
        spans = sink.settle()
    finally:
        sink.stop()
    expected = (res.requests if res.served is None else res.served) * spans_per_request
    return {**res.as_dict(), "agent_cpu_s_per_1k": round(cpu / max(res.requests, 1) * 1000, 4),
            "agent_cpu_share": round(cpu / res.seconds, 3) if res.seconds else 0.0,
            "receiver_cpu_share": round(sink_cpu / res.seconds, 3) if res.seconds else 0.0,
            "agent_peak_rss_mib": round(mem["peak_rss_kib"] / 1024, 1),
            "agent_rss_mib": round(mem["rss_kib"] / 1024, 1), "spans": spans,
            "spans_expected": expected, "span_ratio": round(spans / expected, 4) if expected else 0.0,
            "drops": drops, "dropped": sum(drops.values())}


def overhead_nginx(ctx: Ctx, conns: int = 16) -> dict[str, Any]:
    srv = nginx(ctx.workdir / "nginx", PORT_NGINX, SERVER_CPU, status_port=PORT_NGINX_STATUS)
    url = f"http://127.0.0.1:{PORT_NGINX}/index.html"
    agents = _agent_configs(ctx)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], **{c: [] for c in agents}}
    try:
        _wrk_run(ctx, url, conns)  # warm-up, not recorded
        for r in range(ctx.rounds):
            ctx.log(f"nginx round {r + 1}/{ctx.rounds}: plain")
            runs["plain"].append(_wrk_run(ctx, url, conns, server_pid=srv.pid).as_dict())
            for cfg in agents:
                ctx.log(f"nginx round {r + 1}/{ctx.rounds}: {cfg}")
                runs[cfg].append(_with_agent(ctx, PORT_NGINX,
                                             lambda: _wrk_run(ctx, url, conns, server_pid=srv.pid, counted_by=srv),
                                             agent_keys=AGENT_CONFIGS[cfg]))
    finally:
        srv.stop()
    return _compare(runs, {"server": "nginx 1 process, static 15-byte file, keep-alive", "conns": conns})


def flask_plan(rounds: int, agent_configs: list[str], halves: bool = True) -> list[list[str]]:
    """The configurations of each Flask round, in the order they run. Twice the rounds at half the
    seconds (``overhead_flask``); plain and the default agent in every round, their order swapped
    round by round (plain first in one, the agent first in the next: a drift within the round
    does not always favour the same one); the agent at nice 10 and at nice 0 (full runs) in every
    other round each, and OpenTelemetry (last: its own, instrumented gunicorn) in every other
    round, so each of those is still measured ``rounds`` times. Without ``halves`` (bench-quick,
    which has the default agent only): ``rounds`` rounds, OpenTelemetry in each (each round's fixed
    cost, an agent's start to READY among it, is then paid half as often)."""
    plan = []
    extra = [c for c in agent_configs if c != "agent"]
    for r in range(2 * rounds if halves else rounds):
        pair = ["plain", "agent"] if r % 2 == 0 else ["agent", "plain"]
        if halves:
            plan.append(pair + extra[r % 2::2] + (["otel"] if r % 2 else []))
        else:
            plan.append(pair + extra + ["otel"])
    return plan


def overhead_flask(ctx: Ctx, conns: int = 4) -> dict[str, Any]:
    """Flask under gunicorn: why its rounds are many and short, and its ratios per round. This app's
    speed moves with the host far more than what the agent costs it: one plain gunicorn ran
    anywhere from 2,800 to 3,750 req/s in 40 back-to-back 5 s runs, and a busy loop at SCHED_IDLE
    on the load generator's CPU made it 1.4x faster (its own CPU per request -24%: on this VM a
    halted vCPU makes the other's user code slower). Those 40 runs taken as 20 A/B pairs of the
    same code: three pairs compared by the ratio of their medians ranged 0.964-1.156 over the
    windows of the series, the median of six per-pair ratios 0.985-1.005 (bench/README, the
    twenty-fifth round). So each round's plain and agent runs serve one gunicorn, started for
    the round and warmed up for a second; the headline ratios (``ratio_rps``, ``ratio_p99``,
    ``ratio_server_cpu``) are medians of the per-round ratios, and the ratios of the medians stay
    beside them (``*_of_medians``), as does every round."""
    url = f"http://127.0.0.1:{PORT_FLASK}/work"
    halves = not ctx.quick
    plan = flask_plan(ctx.rounds, _agent_configs(ctx), halves)
    seconds = ctx.seconds / 2 if halves else ctx.seconds
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in ["plain", *_agent_configs(ctx), "otel"]}
    for r, configs in enumerate(plan):
        srv = gunicorn(PORT_FLASK, SERVER_CPU)  # plain and the agents of this round
        try:
            run_wrk(url, seconds=1.0, conns=conns, cpus=LOAD_CPU, workdir=ctx.workdir)  # warm-up, not recorded
            for cfg in configs:
                if cfg == "otel":
                    continue  # after this gunicorn has stopped: the port is theirs in turn
                ctx.log(f"flask round {r + 1}/{len(plan)}: {cfg}")
                if cfg in AGENT_CONFIGS:
                    row = _with_agent(ctx, PORT_FLASK,
                                      lambda: _wrk_run(ctx, url, conns, server_pid=srv.pid, seconds=seconds),  # noqa: B023
                                      agent_keys=AGENT_CONFIGS[cfg])
                else:
                    row = _wrk_run(ctx, url, conns, server_pid=srv.pid, seconds=seconds).as_dict()
                runs[cfg].append({**row, "round": r})
        finally:
            srv.stop()
        if "otel" in configs:
            ctx.log(f"flask round {r + 1}/{len(plan)}: otel")
            runs["otel"].append({**_otel_run(ctx, url, conns, seconds), "round": r})
    return _compare(runs, {"server": "Flask under gunicorn, 1 sync worker (no keep-alive)", "conns": conns,
                           "rounds": len(plan), "seconds": seconds,
                           "ratios": "median of per-round ratios (each against the same round's plain run)"},
                    per_round=True)


def _otel_run(ctx: Ctx, url: str, conns: int, seconds: float) -> dict[str, Any]:
    """opentelemetry-instrument's gunicorn (a process of its own), its spans counted once it stops."""
    otel_sink = Sink(ctx.workdir, PORT_OTEL_SINK, cpus=LOAD_CPU)
    try:
        srv = gunicorn(PORT_FLASK, SERVER_CPU, otel_sink.endpoint)
        try:
            warm = run_wrk(url, seconds=1.0, conns=conns, cpus=LOAD_CPU, workdir=ctx.workdir)  # not timed
            res = _wrk_run(ctx, url, conns, server_pid=srv.pid, seconds=seconds).as_dict()
        finally:
            srv.stop()  # flushes the SDK's batch processor
        res["spans"] = otel_sink.settle()
        res["spans_expected"] = res["requests"] + warm.requests  # the warm-up's requests are traced too
        return res
    finally:
        otel_sink.stop()


def _round_ratios(runs: dict[str, list[dict[str, Any]]], cfg: str, key: str) -> list[float]:
    """``cfg``'s value of ``key`` over plain's, round by round: by the runs' ``round`` where they
    carry one (a configuration measured in some rounds only), else by position."""
    plain = runs["plain"]
    if all("round" in r for r in plain + runs[cfg]):
        by_round = {p["round"]: p for p in plain}
        pairs = [(a, by_round[a["round"]]) for a in runs[cfg] if a["round"] in by_round]
    else:
        pairs = list(zip(runs[cfg], plain))
    return [round(a[key] / p[key], 4) for a, p in pairs if a.get(key) is not None and p.get(key)]


def _compare(runs: dict[str, list[dict[str, Any]]], info: dict[str, Any],
             per_round: bool = False) -> dict[str, Any]:
    """Each configuration's medians and its ratios to plain. ``per_round``: the ratios are the
    medians of the per-round ratios (``overhead_flask``), the ratios of the medians kept beside
    them as ``*_of_medians``; else the ratios of the medians (steady servers: nginx, the databases)."""
    out: dict[str, Any] = {"info": info}
    for cfg, rs in runs.items():
        out[cfg] = _summarize(rs)
    plain = out["plain"]
    for cfg in runs:
        row = out[cfg]
        row["ratio_rps"] = round(row["rps"] / plain["rps"], 4) if plain["rps"] else 0.0
        # pgbench reports a mean latency only: the ratio is of the mean there
        lat = "p99_ms" if "p99_ms" in plain and "p99_ms" in row else "mean_ms"
        row["ratio_p99"] = round(row[lat] / plain[lat], 4) if plain.get(lat) else 0.0
        cpu = plain.get("server_cpu_us_per_req") and "server_cpu_us_per_req" in row
        if cpu:
            row["ratio_server_cpu"] = round(row["server_cpu_us_per_req"] / plain["server_cpu_us_per_req"], 4)
        # per-round ratios (each round's run against the same round's plain run)
        row["round_ratios_rps"] = _round_ratios(runs, cfg, "rps")
        if per_round:
            row["round_ratios_p99"] = _round_ratios(runs, cfg, lat)
            cpu_rounds = _round_ratios(runs, cfg, "server_cpu_us_per_req") if cpu else []
            for key, rounds in (("ratio_rps", row["round_ratios_rps"]), ("ratio_p99", row["round_ratios_p99"]),
                                ("ratio_server_cpu", cpu_rounds)):
                if rounds:
                    row[f"{key}_of_medians"] = row[key]
                    row[key] = round(median(rounds), 4)
            if cpu:
                row["round_ratios_server_cpu"] = cpu_rounds
    return out


# ---- 2. fidelity under load -------------------------------------------------------------------

LEVELS: dict[str, tuple[Optional[float], int]] = {  # name -> (rate, connections)
    "1k": (1000, 10), "5k": (5000, 25), "20k": (20000, 40), "saturation": (None, 16),
}


# Where the agent runs in the fidelity runs: confined to the load generator's CPU (the harsh case
# on 2 cores: it gets what wrk and the OTLP receiver leave), or unpinned, as the unit runs it.
PLACEMENTS: dict[str, Optional[str]] = {"pinned": AGENT_CPU, "unpinned": None}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose span ratio is the median (the lower middle of an even count), with every
    run's ratio beside it; what was missing and not counted is the worst run's, never a median."""
    ordered = sorted(runs, key=lambda r: r["span_ratio"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["span_ratios"] = [r["span_ratio"] for r in runs]
    row["missing_not_counted"] = max(r["missing_not_counted"] for r in runs)
    return row


def fidelity(ctx: Ctx, levels: tuple[str, ...], placements: tuple[str, ...] = ("pinned",),
             repeat: Optional[dict[str, int]] = None) -> list[dict[str, Any]]:
    """One row per level and placement; a level in ``repeat`` runs that many times (the row: the
    median run, with the spread), since where the agent is near its capacity one 10 s run can land
    anywhere in a wide range (the 20k level: 77% to 100% in four runs of one build)."""
    srv = nginx(ctx.workdir / "nginx-fid", PORT_NGINX, SERVER_CPU, status_port=PORT_NGINX_STATUS)
    url = f"http://127.0.0.1:{PORT_NGINX}/index.html"
    out = []
    try:
        for placement, name in itertools.product(placements, levels):
            rate, conns = LEVELS[name]
            runs = []
            for i in range((repeat or {}).get(name, 1)):
                ctx.log(f"fidelity {name}, agent {placement}" + (f", run {i + 1}" if i else ""))
                r = _with_agent(ctx, PORT_NGINX, lambda: _wrk_run(ctx, url, conns, rate, counted_by=srv),  # noqa: B023
                                cpus=PLACEMENTS[placement])
                lost = max(0, r["spans_expected"] - r["spans"])
                measured = {k: r[k] for k in ("rps", "requests", "served", "spans", "spans_expected", "span_ratio",
                                              "drops", "dropped", "p99_ms", "agent_cpu_share", "receiver_cpu_share")}
                runs.append({"level": name, "placement": placement, "target_rps": rate, "conns": conns, **measured,
                             "missing": lost, "missing_not_counted": max(0, lost - r["dropped"])})
            out.append(_median_run(runs))
    finally:
        srv.stop()
    return out


# ---- 4. start-up -------------------------------------------------------------------------------

def startup_cold(ctx: Ctx) -> dict[str, Any]:
    """A start with a fresh runtime directory: no merged header tree yet, as at every start under
    systemd (it empties /run/hostagent at each stop) and the first after boot. Only needed when no
    other measurement starts an agent (the first of theirs is such a start)."""
    sink = Sink(ctx.workdir, PORT_SINK, cpus=LOAD_CPU)
    cold_dir = ctx.workdir / "agent-run-cold"
    shutil.rmtree(cold_dir, ignore_errors=True)
    try:
        a = ctx.agent(sink.endpoint, runtime_dir=cold_dir, cpus=None)
        a.stop()
    finally:
        sink.stop()
    return ctx.starts[-1]


def startup_summary(ctx: Ctx) -> dict[str, Any]:
    warm = [s for s in ctx.starts if not s["cold"]]
    cold = [s for s in ctx.starts if s["cold"]]
    return {
        "warm_ready_s_median": round(median([s["ready_s"] for s in warm]), 3) if warm else None,
        "warm_rss_mib_median": round(median([s["rss_mib"] for s in warm]), 1) if warm else None,
        "warm_compile_s_median": round(median([s.get("compile_s", 0) for s in warm]), 3) if warm else None,
        "warm_attach_s_median": round(median([s.get("attach_s", 0) for s in warm]), 3) if warm else None,
        "cold": cold[-1] if cold else None, "starts": ctx.starts,
    }


# ---- 5. database clients -----------------------------------------------------------------------

def _pin_tree(pid: int, cpus: str) -> None:
    todo = [pid]
    while todo:
        p = todo.pop()
        subprocess.run(["taskset", "-pc", cpus, str(p)], capture_output=True)
        todo.extend(children(p))


def _pgbench(port: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(pinned(["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n", "-S",
                                 "-c", "4", "-j", "1", "-T", str(int(seconds)), "postgres"], LOAD_CPU),
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    txs = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": tps, "mean_ms": lat, "requests": txs, "seconds": seconds}


def _redis_bench(port: int, requests: int) -> dict[str, float]:
    out = subprocess.run(pinned(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(requests),
                                 "-c", "10", "-t", "get", "--csv"], LOAD_CPU),
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.replace('"', "").split(",") for line in out.strip().splitlines()]
    head, vals = rows[0], rows[-1]
    d = dict(zip(head, vals))
    return {"rps": float(d["rps"]), "mean_ms": float(d["avg_latency_ms"]), "p99_ms": float(d["p99_latency_ms"]),
            "requests": requests}


def databases(ctx: Ctx) -> dict[str, Any]:
    from tests.support.db_servers import start_postgres, start_redis

    out: dict[str, Any] = {}
    pg = start_postgres(PORT_PG)
    try:
        _pin_tree(pg.proc.pid, SERVER_CPU)
        subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(PORT_PG), "-U", "postgres", "-i", "-s", "1", "-q",
                        "postgres"], capture_output=True, check=True, timeout=120)
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "agent": []}
        for r in range(ctx.rounds):
            ctx.log(f"pgbench round {r + 1}/{ctx.rounds}")
            runs["plain"].append(_pgbench(PORT_PG, ctx.seconds))
            runs["agent"].append(_db_with_agent(ctx, ("postgres",), lambda: _pgbench(PORT_PG, ctx.seconds)))
        out["pgbench"] = _compare(runs, {"client": "pgbench -S (select only), 4 clients", "server": "postgres 15"})
    finally:
        pg.stop()
    rd = start_redis(PORT_REDIS)
    try:
        _pin_tree(rd.proc.pid, SERVER_CPU)
        n = int(20000 * ctx.seconds)
        runs = {"plain": [], "agent": []}
        for r in range(ctx.rounds):
            ctx.log(f"redis-benchmark round {r + 1}/{ctx.rounds}")
            runs["plain"].append(_redis_bench(PORT_REDIS, n))
            runs["agent"].append(_db_with_agent(ctx, ("redis",), lambda: _redis_bench(PORT_REDIS, n)))
        out["redis"] = _compare(runs, {"client": "redis-benchmark -t get, 10 clients", "server": "redis 7"})
    finally:
        rd.stop()
    return out


def _db_with_agent(ctx: Ctx, probes: tuple[str, ...], run: Callable[[], dict[str, float]]) -> dict[str, Any]:
    sink = Sink(ctx.workdir, PORT_SINK, cpus=LOAD_CPU)
    try:
        agent = ctx.agent(sink.endpoint, probes)
        try:
            cpu0 = agent.cpu_seconds()
            res = run()
            cpu = agent.cpu_seconds() - cpu0
            mem = agent.memory()
        finally:
            drops = agent.stop()
        spans = sink.settle()
    finally:
        sink.stop()
    return {**res, "agent_cpu_s_per_1k": round(cpu / max(res["requests"], 1) * 1000, 4),
            "agent_peak_rss_mib": round(mem["peak_rss_kib"] / 1024, 1),
            "agent_rss_mib": round(mem["rss_kib"] / 1024, 1), "spans": spans,
            "drops": drops, "dropped": sum(drops.values())}


# ---- 3. capacity ---------------------------------------------------------------------------------

def capacity(ctx: Ctx, record_seconds: float, repeat: int, new_connection: bool = True) -> dict[str, Any]:
    """Record real kernel events of wrk -> nginx, replay them through the pipeline on one core:
    keep-alive connections (2 ring records per transaction), then a new connection per request
    (connect/accept/close too: ~4-5 records per transaction, as Flask under gunicorn or any
    client without a pool produces)."""
    out = _capacity_one(ctx, record_seconds, repeat, close=False, stages=True)
    if new_connection:
        out["new_connection"] = _capacity_one(ctx, record_seconds, repeat, close=True, stages=False)
    return out


def _replay_proc(ctx: Ctx, recording: Path, endpoint: str, repeat: int, pure: bool,
                 profile: bool = False) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "HOSTAGENT_PURE"}
    if pure:
        env["HOSTAGENT_PURE"] = "1"
    out = subprocess.run([sys.executable, "-m", "bench.replay_proc", str(recording), endpoint, str(ctx.workdir),
                          str(repeat), AGENT_CPU, *(["profile"] if profile else [])],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"replay failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _capacity_one(ctx: Ctx, record_seconds: float, repeat: int, close: bool, stages: bool) -> dict[str, Any]:
    from bench import capacity as cap

    srv = nginx(ctx.workdir / "nginx-cap", PORT_CAP_NGINX, SERVER_CPU)
    sink = Sink(ctx.workdir, PORT_CAP_SINK, cpus=SERVER_CPU)
    try:
        kind = "a new connection per request" if close else "keep-alive"
        ctx.log(f"capacity, {kind}: recording")
        records, info = cap.record(ctx.workdir, f"http://127.0.0.1:{PORT_CAP_NGINX}/index.html",
                                   record_seconds, 3000, 8, LOAD_CPU, close=close)
        # wrk is gone by now: its events get this process's pid (a live, distinct process).
        pids = [p for p in cap.record_pids(records) if p != srv.pid and not Path(f"/proc/{p}").exists()]
        records = cap.remap_pids(records, {p: os.getpid() for p in pids[:1]})
        # Each replay in a fresh process: the stages as shipped (compiled when make compile ran)
        # and, alternated with it, the same stages from their Python source (HOSTAGENT_PURE=1).
        recording = ctx.workdir / f"recording-{'close' if close else 'keep-alive'}.pickle"
        recording.write_bytes(pickle.dumps(records))
        compiled_in_use = bool(compiled.COMPILED_MODULES)
        runs: list[dict[str, Any]] = []
        runs_pure: list[dict[str, Any]] = []
        ctx.log(f"capacity, {kind}: replays")
        for r in range(ctx.rounds):
            runs.append(_replay_proc(ctx, recording, sink.endpoint, repeat, pure=False))
            if compiled_in_use and (r == 0 or not ctx.quick):
                runs_pure.append(_replay_proc(ctx, recording, sink.endpoint, repeat, pure=True))
        saved = os.sched_getaffinity(0)
        cap.pin_self(AGENT_CPU)  # threads started from here on (exporter, gRPC) inherit it
        try:
            ctx.log(f"capacity, {kind}: profile" + (" and stage costs" if stages else ""))
            # cProfile sees no function inside a compiled module: profile the same stages' source
            prof = _replay_proc(ctx, recording, sink.endpoint, 1, pure=True, profile=True)
            stage = cap.stage_costs(ctx.workdir, records, sink.endpoint, passes=2) if stages else None
        finally:
            os.sched_setaffinity(0, saved)
    finally:
        sink.stop()
        srv.stop()
    best = min(runs, key=lambda r: r["us_per_span"] or 1e9)
    med = median([r["us_per_span"] for r in runs if r["us_per_span"]])
    pure: Optional[dict[str, Any]] = None
    if runs_pure:
        med_pure = median([r["us_per_span"] for r in runs_pure if r["us_per_span"]])
        pure = {"runs": runs_pure, "us_per_span_median": round(med_pure, 2),
                "spans_per_core_s_median": round(1e6 / med_pure) if med_pure else None,
                "compiled_speedup": round(med_pure / med, 2) if med else None}
    return {"connections": "new per request" if close else "keep-alive", "stages": runs[0].get("stages"),
            "pure": pure,
            "recorded": {"events": len(records), **info}, "runs": runs,
            "events_per_span": round(len(records) * repeat / max(runs[0]["spans"], 1), 2),
            "us_per_span_median": round(med, 2), "spans_per_core_s_median": round(1e6 / med) if med else None,
            "best": {k: best[k] for k in ("us_per_span", "spans_per_cpu_s", "producer_cpu_s", "export_cpu_s")},
            "stage_us_per_span": stage, "profile_us_per_span": prof.get("profile"),
            "profile_top": prof.get("profile_text", ""),
            "memory_kib": memory_kib(os.getpid())}
