"""Results -> bench/results/<date>-<shortsha>[-quick][-N].json, a Markdown table and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGETS = {
    "flask_agent_ratio": 0.97, "flask_p99_ratio": 1.05, "nginx_agent_ratio": 0.90,
    "capacity_spans_per_s": 20000, "ready_s": 5.0, "rss_mib": 200,
}


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _app_cpu(r: dict[str, Any]) -> str:
    """CPU of the traced server itself per request: what tracing costs inside the app, apart from
    the CPU the agent takes from the machine (on 2 cores, partly from the load generator)."""
    if r.get("server_cpu_us_per_req") is None:
        return "-"
    ratio = r.get("ratio_server_cpu")
    return f"{r['server_cpu_us_per_req']:.1f}" + (f" ({ratio:.3f})" if ratio is not None else "")


def _rss(r: dict[str, Any]) -> str:
    """VmRSS when the load ended (steady) / VmHWM (peak: includes bcc's compile at start)."""
    if r.get("agent_peak_rss_mib") is None:
        return "-"
    return f"{_fmt(r.get('agent_rss_mib'), 0)} / {_fmt(r.get('agent_peak_rss_mib'), 0)}"


# How a config is named in the tables and the chart.
CONFIG_LABELS = {"agent": "agent (default: idle policy, nice 10)", "agent_nice10": "agent at nice 10 (normal policy)",
                 "agent_nice0": "agent at nice 0 (normal policy)", "otel": "OpenTelemetry zero-code"}


CHART_LABELS = {"agent (default: idle policy, nice 10)": "agent\nidle",
                "agent at nice 10 (normal policy)": "agent\nnice 10",
                "agent at nice 0 (normal policy)": "agent\nnice 0",
                "OpenTelemetry zero-code": "OTel\nzero-code"}


def overhead_rows(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = []
    for workload in ("nginx", "flask", "pgbench", "redis"):
        block = results.get("overhead", {}).get(workload) or results.get("db", {}).get(workload)
        if not block:
            continue
        for cfg in ("plain", "agent", "agent_nice10", "agent_nice0", "otel"):
            if cfg in block:
                rows.append((workload, CONFIG_LABELS.get(cfg, cfg), block[cfg]))
    return rows


def _spread(f: dict[str, Any]) -> str:
    """A repeated level's row is its median run: say so, and how far the runs ranged."""
    ratios = f.get("span_ratios") or []
    if len(ratios) < 2:
        return ""
    return f"; median of {len(ratios)} runs, {min(ratios) * 100:.1f}-{max(ratios) * 100:.1f}%"


def markdown(results: dict[str, Any]) -> str:
    m = results["meta"]
    # what the Flask rounds were (bench-quick: as many as the others, whole; full runs: twice as many, half as long)
    flask = results.get("overhead", {}).get("flask", {}).get("info", {})
    flask_rounds, flask_s = flask.get("rounds", 2 * m["rounds"]), flask.get("seconds", m["seconds"] / 2)
    lines = [f"Run {m['date']} at {m['commit']} ({m['mode']}; {m['rounds']} rounds x {m['seconds']} s, "
             f"medians; Flask in {flask_rounds} rounds x {flask_s:g} s, its ratios the medians of the "
             "per-round ratios; "
             f"server CPU {m['server_cpu']}, load CPU {m['load_cpu']}, agent unpinned "
             "(fidelity: placement per row); "
             f"load average at start {m['loadavg_start']}, other BPF programs loaded: {m['other_bpf_progs']})", "",
             "| workload | config | req/s | vs plain | p50 ms | p99 ms | p99 vs plain | app CPU us/req (vs plain) "
             "| agent CPU s/1k req | agent RSS MiB end of load / peak | spans / expected | drops |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for workload, cfg, r in overhead_rows(results):
        is_agent = cfg.startswith("agent")
        spans = f"{r['spans']:.0f} / {r['spans_expected']:.0f}" if "spans_expected" in r else (
            f"{r['spans']:.0f}" if "spans" in r else "-")
        lines.append(
            f"| {workload} | {cfg} | {r['rps']:.0f} | {_fmt(r.get('ratio_rps'), 3)} | {_fmt(r.get('p50_ms'))} | "
            f"{_fmt(r.get('p99_ms', r.get('mean_ms')))} | {_fmt(r.get('ratio_p99'), 3)} | {_app_cpu(r)} | "
            f"{_fmt(r.get('agent_cpu_s_per_1k'), 3)} | {_rss(r)} | {spans} | "
            f"{_fmt(sum(r['drops_total'].values()) if r.get('drops_total') else (0 if is_agent else None))} |")
    fid = results.get("fidelity")
    if fid:
        lines += ["", "Fidelity (nginx; 2 spans per request: wrk's client span and nginx's server span; requests: "
                  "those nginx read, by its stub_status, wrk's answered ones and those in flight when it stopped; "
                  f"the agent either pinned to CPU {m['agent_cpu']}, shared with wrk and the OTLP receiver, or "
                  "unpinned as the unit runs it):", "",
                  "| load | agent | achieved req/s | requests | spans / expected | drops (by cause) "
                  "| missing not counted | agent / receiver CPU share |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in fid:
            drops = ", ".join(f"{k} {v}" for k, v in f["drops"].items()) or "0"
            lines.append(f"| {f['level']} | {f.get('placement', 'pinned')} | {f['rps']:.0f} | "
                         f"{f.get('served', f['requests'])} | "
                         f"{f['spans']} / {f['spans_expected']} "
                         f"({f['span_ratio'] * 100:.2f}%{_spread(f)}) | {drops} | {f['missing_not_counted']} "
                         f"| {_fmt(f.get('agent_cpu_share'), 2)} / {_fmt(f.get('receiver_cpu_share'), 2)} |")
    cap = results.get("capacity")
    if cap:
        lines += ["", f"Capacity (recorded kernel events of wrk -> nginx replayed through the whole pipeline, one "
                  f"core, export included): **{cap['us_per_span_median']:.1f} us per transaction = "
                  f"{cap['spans_per_core_s_median']} transactions/s per core** (median of {len(cap['runs'])}; "
                  f"per-span stages: {cap.get('stages', '-')})."
                  + (f" The same stages from their Python source (`HOSTAGENT_PURE=1`), alternated with it: "
                     f"{cap['pure']['us_per_span_median']:.1f} us = {cap['pure']['spans_per_core_s_median']}/s; "
                     f"compiled is **{cap['pure']['compiled_speedup']}x** faster." if cap.get("pure") else ""),
                  "", "Where the time goes: each stage timed alone over the same recording (thread CPU, best of 2), "
                  "and the cProfile of the whole replay run on the stages' Python source (cProfile sees nothing "
                  "inside a compiled module; pipeline thread; profiling inflates, read the shares):",
                  "", "| stage | us/span alone | us/span cProfile |", "|---|---|---|"]
        prof = cap.get("profile_us_per_span") or {}
        for k, v in (cap.get("stage_us_per_span") or {}).items():
            lines.append(f"| {k} | {v} | |")
        for k, v in prof.items():
            lines.append(f"| {k} | | {v} |")
        b = cap["best"]
        lines.append(f"| export thread (OTLP encode + gRPC), unprofiled, best run | "
                     f"{b['export_cpu_s'] / max(cap['runs'][0]['spans'], 1) * 1e6:.1f} |")
        nc = cap.get("new_connection")
        if nc:
            lines += ["", f"With a new connection per request (wrk `Connection: close` -> nginx: connect, accept and "
                      f"close events too, {nc['events_per_span']} ring records per transaction instead of "
                      f"{cap.get('events_per_span', '-')}): **{nc['us_per_span_median']:.1f} us per transaction = "
                      f"{nc['spans_per_core_s_median']} transactions/s per core** (median of {len(nc['runs'])})"
                      + (f"; from source {nc['pure']['us_per_span_median']:.1f} us ({nc['pure']['compiled_speedup']}x)."
                         if nc.get("pure") else ".")]
        probes = [(name, blk["recorded"].get("probe")) for name, blk in (("keep-alive", cap), ("new connection "
                  "per request", nc or {"recorded": {}}))]
        probes = [(n, p) for n, p in probes if p]
        if probes:
            lines += ["", "Probe time: kernel time inside our BPF programs per request (both sides: wrk's and "
                      "nginx's syscalls), from the kernel's own counters (`kernel.bpf_stats_enabled`, run_time_ns "
                      "per program) while recording at ~3k req/s:", "",
                      "| connections | ns per request | largest programs (runs per request x ns per run) |",
                      "|---|---|---|"]
            for name, p in probes:
                top = ", ".join(f"{x['program']} {x['runs_per_request']}x{x['ns_per_run']}"
                                for x in p["programs"][:5])
                lines.append(f"| {name} | {p['ns_per_request']} | {top} |")
    st = results.get("startup")
    if st:
        cold = st.get("cold") or {}
        lines += ["", f"Start-up: start to READY=1 **{_fmt(st['warm_ready_s_median'])} s** with a header tree "
                  f"from an earlier start (compile {_fmt(st['warm_compile_s_median'])} s, attach "
                  f"{_fmt(st['warm_attach_s_median'])} s), {_fmt(cold.get('ready_s'))} s on a first start; "
                  f"RSS after start {_fmt(st['warm_rss_mib_median'], 0)} MiB."]
    return "\n".join(lines) + "\n"


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = overhead_rows(results)
    labels = [f"{w}\n{CHART_LABELS.get(c, c)}" for w, c, _ in rows]
    ratios = [r.get("ratio_rps", 0) for _, _, r in rows]
    p99 = [r.get("p99_ms", r.get("mean_ms", 0)) for _, _, r in rows]
    colors = ["#888888" if c == "plain" else "#2a7ab9" if c.startswith("agent (") else
              "#9ec5e5" if c.startswith("agent") else "#d9822b" for _, c, _ in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(max(6, len(rows) * 0.9), 7))
    a1.bar(labels, ratios, color=colors)
    a1.axhline(1.0, color="black", linewidth=0.8)
    a1.set_ylabel("throughput / plain")
    a1.set_title(f"hostagent overhead ({results['meta']['date']} {results['meta']['commit']})")
    for i, v in enumerate(ratios):
        a1.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    a2.bar(labels, p99, color=colors)
    a2.set_ylabel("p99 latency ms (pgbench: mean)")
    a2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def free_stem(outdir: Path, base: str) -> str:
    """``base``, or ``base-2``, ``-3``...: the first whose .json is not in outdir (no run overwrites
    another: two runs of one commit)."""
    stem, n = base, 1
    while (outdir / f"{stem}.json").exists():
        n += 1
        stem = f"{base}-{n}"
    return stem


def write(results: dict[str, Any], outdir: Path) -> dict[str, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    # a quick run is named as such, and no run overwrites another (two runs of one commit)
    stem = free_stem(outdir, f"{results['meta']['date']}-{results['meta']['commit']}" + (
        "-quick" if results["meta"].get("mode") == "quick" else ""))
    paths = {"json": outdir / f"{stem}.json", "md": outdir / f"{stem}.md", "png": outdir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(results, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown(results))
    chart(results, paths["png"])
    return paths
