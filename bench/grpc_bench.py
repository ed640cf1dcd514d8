"""gRPC unary benchmark with and without the agent, alternated (issue 8).

    sudo .venv/bin/python -m bench.grpc_bench [--rounds 3] [--seconds 5] [--threads 4] [--out FILE.json]

The demo service (tests/support/grpc_demo) serves in its own process on CPU 0; a grpcio client
process on CPU 1 runs ``--threads`` threads of blocking unary calls on one channel (one HTTP/2
connection, streams multiplexed) for ``--seconds``. Rounds alternate: plain (no agent at all), then
agent (probe "http2", started fresh, its OTLP going to a counting sink on CPU 1, unpinned itself as
on a real host). Reported per configuration, median over rounds: calls/s, client p50/p99 latency;
for the agent: throughput ratio to plain (per round and median), agent CPU seconds per 1,000 calls,
spans received against 2 per call (client + server), drops by cause. Loopback only; ports
19020-19021; bounded by rounds x (seconds + agent start ~20 s).

``run(workdir, seconds, rounds, log)`` returns the same dict for bench.run to include.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from bench.agent_proc import BenchAgent
from bench.procs import pinned
from bench.procs import stop as stop_proc
from bench.sink_proc import Sink
from tests.support.servers import wait_port

REPO = Path(__file__).resolve().parents[1]
SERVER_CPU, LOAD_CPU = "0", "1"
PORT_GRPC, PORT_SINK = 19020, 19021


# ---- the client (runs in its own process: python -m bench.grpc_bench --client ...) -------------

def client_main(port: int, seconds: float, threads: int) -> None:
    """Blocking unary calls from ``threads`` threads on one channel; prints a JSON summary."""
    from tests.support.grpc_demo import demo_pb2
    from tests.support.grpc_demo.service import stub_for

    channel, stub = stub_for(port)
    request = demo_pb2.EchoRequest(text="bench")
    for _ in range(200):  # warm-up: connection, HPACK tables, code paths
        stub.Unary(request, timeout=10)
    latencies: list[list[int]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start = time.monotonic()
    deadline = start + seconds

    def worker(i: int) -> None:
        mine = latencies[i]
        while True:
            if time.monotonic() >= deadline:
                return
            t0 = time.perf_counter_ns()
            try:
                stub.Unary(request, timeout=10)
            except Exception:  # counted: a benchmark reports failures, it does not stop on them
                errors[i] += 1
            mine.append(time.perf_counter_ns() - t0)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    channel.close()
    lat = sorted(x for per in latencies for x in per)
    calls = len(lat)
    print(json.dumps({
        "calls": calls, "errors": sum(errors), "seconds": round(elapsed, 3),
        "calls_per_s": round(calls / elapsed, 1),
        "p50_ms": round(lat[calls // 2] / 1e6, 3) if lat else 0.0,
        "p99_ms": round(lat[min(calls - 1, int(calls * 0.99))] / 1e6, 3) if lat else 0.0,
    }))


# ---- the driver ---------------------------------------------------------------------------------

def _run_client(seconds: float, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        pinned([sys.executable, "-m", "bench.grpc_bench", "--client", str(PORT_GRPC), str(seconds), str(threads)],
               LOAD_CPU),
        cwd=REPO, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"grpc bench client failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _start_server() -> subprocess.Popen[bytes]:
    code = (f"from tests.support.grpc_demo.service import start_server; "
            f"start_server({PORT_GRPC}, workers=8).wait_for_termination()")
    proc = subprocess.Popen(pinned([sys.executable, "-c", code], SERVER_CPU), cwd=REPO)
    wait_port(PORT_GRPC)
    return proc


def _agent_round(workdir: Path, n: int, seconds: float, threads: int, runtime_dir: Path) -> dict[str, Any]:
    sink = Sink(workdir, PORT_SINK, cpus=LOAD_CPU, server_port=PORT_GRPC)
    try:
        agent = BenchAgent(workdir / f"grpc-agent-{n}", sink.endpoint, runtime_dir=runtime_dir,
                           probes=("http2",)).start()
        try:
            cpu0 = agent.cpu_seconds()
            res = _run_client(seconds, threads)
            cpu = agent.cpu_seconds() - cpu0
            mem = agent.memory()
        finally:
            drops = agent.stop()
        spans = sink.settle()
    finally:
        sink.stop()
    # the client's 200 warm-up calls are traced too (each is a client and a server span)
    expected = 2 * (res["calls"] + 200)
    return {**res, "agent_ready_s": round(agent.ready_s, 2),
            "agent_cpu_s_per_1k": round(cpu / max(res["calls"], 1) * 1000, 4),
            "agent_cpu_share": round(cpu / res["seconds"], 3),
            "agent_peak_rss_mib": round(mem["peak_rss_kib"] / 1024, 1),
            "spans": spans, "spans_expected": expected, "span_ratio": round(spans / expected, 4),
            "drops": drops, "dropped": sum(drops.values())}


def _median(rs: list[dict[str, Any]], key: str) -> float:
    return round(float(statistics.median(r[key] for r in rs)), 4)


def run(workdir: Path, seconds: float = 5.0, rounds: int = 3, log: Callable[[str], None] = print,
        threads: int = 4) -> dict[str, Any]:
    runtime_dir = workdir / "agent-run"  # reused across agent starts, like /run/hostagent
    server = _start_server()
    plain: list[dict[str, Any]] = []
    agent: list[dict[str, Any]] = []
    try:
        _run_client(min(seconds, 2.0), threads)  # warm-up, not recorded
        for r in range(rounds):
            log(f"grpc round {r + 1}/{rounds}: plain")
            plain.append(_run_client(seconds, threads))
            log(f"grpc round {r + 1}/{rounds}: agent")
            agent.append(_agent_round(workdir, r, seconds, threads, runtime_dir))
    finally:
        stop_proc(server)
    drops: dict[str, int] = {}
    for a in agent:
        for k, v in a["drops"].items():
            drops[k] = drops.get(k, 0) + v
    return {
        "info": {"server": "grpcio demo service, 8 worker threads, CPU " + SERVER_CPU,
                 "client": f"grpcio, {threads} threads of blocking unary calls, one channel, CPU {LOAD_CPU}",
                 "probes": ["http2"], "seconds": seconds, "rounds": rounds},
        "plain": {"calls_per_s": _median(plain, "calls_per_s"), "p50_ms": _median(plain, "p50_ms"),
                  "p99_ms": _median(plain, "p99_ms"), "rounds": plain},
        "agent": {"calls_per_s": _median(agent, "calls_per_s"), "p50_ms": _median(agent, "p50_ms"),
                  "p99_ms": _median(agent, "p99_ms"),
                  "agent_cpu_s_per_1k": _median(agent, "agent_cpu_s_per_1k"),
                  "agent_cpu_share": _median(agent, "agent_cpu_share"),
                  "span_ratio": _median(agent, "span_ratio"), "drops_total": drops, "rounds": agent},
        "ratio_calls_per_s": round(_median(agent, "calls_per_s") / _median(plain, "calls_per_s"), 4),
        "round_ratios": [round(a["calls_per_s"] / p["calls_per_s"], 4) for a, p in zip(agent, plain)],
        "ratio_p99": round(_median(agent, "p99_ms") / _median(plain, "p99_ms"), 4),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--out", type=Path, help="write the JSON result here too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("grpc_bench: run as root (BPF)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        result = run(Path(tmp), args.seconds, args.rounds,
                     lambda m: print(f"[{time.monotonic() - t0:6.1f}s] {m}", flush=True), args.threads)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    summary: dict[str, Optional[object]] = {
        k: result[k] for k in ("ratio_calls_per_s", "round_ratios", "ratio_p99")}
    summary.update(plain_calls_per_s=result["plain"]["calls_per_s"], agent_calls_per_s=result["agent"]["calls_per_s"],
                   agent_cpu_s_per_1k=result["agent"]["agent_cpu_s_per_1k"],
                   span_ratio=result["agent"]["span_ratio"], drops=result["agent"]["drops_total"])
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
