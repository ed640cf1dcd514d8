"""The live agent's CPU per span, per thread: two trees' agents alternated on the same traffic.

The replay (bench.replay_proc) leaves out what only the live agent runs: the ring walk and its
pacing, the poll loop, the wake-ups, being preempted beside the apps. Here the real daemon
(bench.agent_proc.BenchAgent, started from each tree in turn, its own compiled modules) traces
nginx (CPU 0) under paced keep-alive wrk (CPU 1, as the bench's fidelity levels); the agent is
pinned to CPU 1 after READY (``--cpus none``: not pinned). Over ``--secs`` after 1.5 s of load:
the agent's CPU (every thread, /proc/PID/task/*/stat) over the spans the sink counted (only spans
of the benchmark's server port), split into the poll thread (the main thread: the ring walk and
the pipeline), the busiest other thread (the export thread) and the rest; and the poll thread's
switches. Pairs alternate which tree goes first.

    sudo .venv/bin/python -m bench.live_ab /work/main . /tmp/live --rate 10000 --pairs 4

Run from OLD's tree: the sink, nginx and wrk are OLD's bench code; each agent its own tree's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Optional

import bench.agent_proc as agent_proc
from bench.load import WrkResult, run_wrk
from bench.servers import nginx
from bench.sink_proc import Sink

TICKS = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[int, tuple[float, float, int, int]]:
    """tid -> (user s, system s, voluntary switches, involuntary switches)."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{t}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{t}/status").read_text()
        except OSError:  # ended meanwhile
            continue
        f = stat[stat.rindex(")") + 2 :].split()
        sw = {k: int(v) for k, v in (line.split(":") for line in status.splitlines() if "ctxt_switches" in line)}
        out[int(t)] = (int(f[11]) / TICKS, int(f[12]) / TICKS, sw.get("voluntary_ctxt_switches", 0),
                       sw.get("nonvoluntary_ctxt_switches", 0))
    return out


def one_run(repo: Path, workdir: Path, url: str, port: int, args: argparse.Namespace) -> dict[str, Any]:
    agent_proc.REPO = repo  # BenchAgent starts `python -m hostagent` in this tree
    workdir.mkdir(parents=True, exist_ok=True)
    sink = Sink(workdir, port + 1, cpus="1", server_port=port)
    agent: Optional[agent_proc.BenchAgent] = None
    try:
        agent = agent_proc.BenchAgent(workdir, sink.endpoint, cpus=None if args.cpus == "none" else args.cpus).start()
        box: dict[str, WrkResult] = {}
        load = threading.Thread(target=lambda: box.setdefault("wrk", run_wrk(
            url, seconds=args.secs + 2, conns=args.conns, rate=args.rate, cpus="1", workdir=workdir)))
        load.start()
        time.sleep(1.5)
        s0, t0, w0 = sink.spans(), thread_times(agent.pid), time.monotonic()
        time.sleep(args.secs)
        s1, t1, w1 = sink.spans(), thread_times(agent.pid), time.monotonic()
        load.join()
    finally:
        if agent is not None:
            agent.stop()
        sink.stop()
    spans = max(s1 - s0, 1)
    d = {tid: [a - b for a, b in zip(v, t0.get(tid, (0, 0, 0, 0)))] for tid, v in t1.items()}
    cpu = {tid: v[0] + v[1] for tid, v in d.items()}
    poll = d.get(agent.pid, [0, 0, 0, 0])
    export = max((c for tid, c in cpu.items() if tid != agent.pid), default=0.0)
    total = sum(cpu.values())
    us = 1e6 / spans
    return {"rps": round(box["wrk"].rps), "spans_s": round(spans / (w1 - w0)), "cpu": round(total / (w1 - w0), 3),
            "us_span": round(total * us, 2), "poll_us": round((poll[0] + poll[1]) * us, 2),
            "poll_sys_us": round(poll[1] * us, 2), "export_us": round(export * us, 2),
            "rest_us": round((total - poll[0] - poll[1] - export) * us, 2),
            "poll_voluntary": poll[2], "poll_involuntary": poll[3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--rate", type=float, default=10000)
    ap.add_argument("--conns", type=int, default=40)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--secs", type=float, default=8.0)
    ap.add_argument("--cpus", default="1", help="the agent's CPUs after READY ('none': not pinned)")
    ap.add_argument("--port", type=int, default=18920, help="nginx's; the sink takes the next one")
    args = ap.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    args.workdir.mkdir(parents=True, exist_ok=True)
    srv = nginx(args.workdir / "nginx", args.port, "0")
    url = f"http://127.0.0.1:{args.port}/index.html"
    rows: list[dict[str, Any]] = []
    try:
        for i in range(args.pairs):
            for label in ("old", "new") if i % 2 == 0 else ("new", "old"):
                row = {"pair": i, "tree": label,
                       **one_run(trees[label], args.workdir / f"agent-{label}-{i}", url, args.port, args)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        srv.stop()
    for key in ("us_span", "poll_us", "export_us", "rest_us", "spans_s", "cpu"):
        medians = {t: statistics.median(r[key] for r in rows if r["tree"] == t) for t in trees}
        print(f"{key} median: old {medians['old']:g}, new {medians['new']:g}")


if __name__ == "__main__":
    main()
