"""``make bench`` / ``make bench-quick``: every measurement of issue 7, one JSON + table + chart.

    sudo .venv/bin/python -m bench.run [--quick] [--only overhead,fidelity,capacity,startup,db]

Root is needed (BPF). Loopback only; ports 18900-18999; everything bounded in time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench import report, scenarios

REPO = Path(__file__).resolve().parents[1]


def short_commit() -> str:
    """The checkout's short commit id, which names the results ("nogit" outside a git checkout)."""
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip() or "nogit"
ALL = ("overhead", "fidelity", "capacity", "startup", "db")


def _bpf_prog_count() -> int:
    try:
        out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return -1
    return sum(1 for line in out.splitlines() if line[:1].isdigit() and "tracepoint" in line)


def _names(value: str) -> frozenset[str]:
    """``--only``'s comma-separated measurements; an unknown name is an error, not a run of nothing."""
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(names - set(ALL))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown measurement {', '.join(unknown) or repr(value)}: "
                                         f"choose from {', '.join(ALL)}")
    return names


def _positive(kind: type) -> Any:
    def parse(value: str) -> Any:
        try:
            n = kind(value)
        except ValueError:
            n = 0  # not a number: refused below, with the same words
        if n <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {value!r}")
        return n
    return parse


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="hostagent benchmarks (issue 7): overhead on traced apps, fidelity under load, capacity, "
                    "start-up, database clients. Root; loopback only.")
    ap.add_argument("--quick", action="store_true", help="shorter runs, no database clients unless --only names "
                    "them (< 3 min)")
    ap.add_argument("--only", type=_names, metavar="NAME[,NAME]",
                    help=f"only these measurements, of {','.join(ALL)} (default: all; --quick: all but db)")
    ap.add_argument("--rounds", type=_positive(int), help="A/B rounds per configuration (default 3)")
    ap.add_argument("--seconds", type=_positive(float), help="seconds of load per run (default 10, --quick 3)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results",
                    help="directory for the JSON, Markdown and PNG results (default bench/results)")
    args = ap.parse_args(argv)
    if args.only is None:
        args.only = frozenset(n for n in ALL if not (args.quick and n == "db"))
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (BPF)", file=sys.stderr)
        return 2
    needed = {int(scenarios.SERVER_CPU), int(scenarios.LOAD_CPU)}
    usable = os.sched_getaffinity(0)
    if not needed <= usable:
        print(f"bench: needs CPUs {sorted(needed)} (the server pinned to CPU {scenarios.SERVER_CPU}, the load "
              f"generator to CPU {scenarios.LOAD_CPU}); this process may use CPUs {sorted(usable)}", file=sys.stderr)
        return 2
    only = set(args.only)
    quick = args.quick
    rounds = args.rounds or 3
    seconds = args.seconds or (3.0 if quick else 10.0)
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    commit = short_commit()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "hostagent", "bpf"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    results: dict[str, Any] = {"meta": {
        "date": datetime.date.today().isoformat(), "commit": commit, "dirty_tree": dirty,
        "mode": "quick" if quick else "full", "rounds": rounds, "seconds": seconds,
        "server_cpu": scenarios.SERVER_CPU, "load_cpu": scenarios.LOAD_CPU, "agent_cpu": scenarios.AGENT_CPU,
        "cpus": os.cpu_count(), "kernel": os.uname().release, "python": sys.version.split()[0],
        "loadavg_start": os.getloadavg()[0], "other_bpf_progs": _bpf_prog_count(),
    }}
    try:
        _measure(results, only, quick, seconds, rounds, log)
    except BaseException:
        # what was measured before the failure is still written (and the failure re-raised)
        results["meta"]["failed"] = True
        report.write(results, args.out)
        raise
    results["meta"]["elapsed_s"] = round(time.monotonic() - t0, 1)
    results["meta"]["loadavg_end"] = os.getloadavg()[0]
    paths = report.write(results, args.out)
    print(report.markdown(results))
    for kind, p in paths.items():
        print(f"{kind}: {p}")
    return 0


def _measure(results: dict[str, Any], only: set[str], quick: bool, seconds: float, rounds: int,
             log: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="hostagent-bench-") as tmp:
        ctx = scenarios.Ctx(Path(tmp), seconds, rounds, log)
        ctx.quick = quick
        try:
            if "startup" in only and not only & {"overhead", "fidelity", "db"}:
                # else the first agent those start is the first start (ctx.runtime_dir is new)
                log("start-up (first start: header tree built)")
                scenarios.startup_cold(ctx)
            if "overhead" in only:
                results["overhead"] = {"nginx": scenarios.overhead_nginx(ctx), "flask": scenarios.overhead_flask(ctx)}
            if "fidelity" in only:
                levels = ("5k", "20k") if quick else ("1k", "5k", "20k", "saturation")
                results["fidelity"] = scenarios.fidelity(ctx, levels, ("pinned",) if quick else ("pinned", "unpinned"),
                                                         repeat=None if quick else {"20k": 3})
            if "capacity" in only:
                log("capacity (record + replay)")
                results["capacity"] = scenarios.capacity(ctx, record_seconds=1.0 if quick else 2.0,
                                                         repeat=1 if quick else 2, new_connection=not quick)
            if "db" in only:
                results["db"] = scenarios.databases(ctx)
        finally:
            if ctx.starts:
                results["startup"] = scenarios.startup_summary(ctx)


if __name__ == "__main__":
    sys.exit(main())
