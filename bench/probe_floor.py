"""What a capturing BPF program costs at the least on this machine, beside what ours cost.

The probe-time target (~500 ns per request, OBI's figure) is set on another machine. Here each
helper call is a kernel call and return under this host's mitigations, so the same program costs
a different multiple of it from one machine to the next. This loads stand-alone programs of
growing content on the hooks our socket data path uses (``sock_send_length`` and
``sock_recv_length``, raw tracepoints), one variant at a time, and reads their run time from the
kernel's counters (``kernel.bpf_stats_enabled``) while wrk drives nginx at a paced keep-alive
rate; then our own socket and process groups (the real BpfCapture, drained) under the same load.
Variants run in turn, round after round (A/B/C/...), and each figure is the median of the rounds.

    sudo .venv/bin/python -m bench.probe_floor [--rounds 3] [--seconds 3] [--rate 3000]

Writes ``bench/results/<date>-<shortsha>-floor.json`` (every round) and ``.md`` (the medians).

Variants (each adds to the one before; ``reserve`` is ``minimal`` written in place):
- empty: returns at once (the dispatch and the counters' two clock reads);
- pid: the caller's pid_tgid, the agent's own calls left out, a negative length left out;
- regs: the syscall's saved registers (``bpf_task_pt_regs``: the fd and the user buffer);
- lookup: a hash lookup by (tgid, fd), inserted on a miss (the socket's entry);
- copy: up to PAYLOAD bytes of the user buffer copied (``bpf_probe_read_user``) to a per-CPU scratch;
- stamp: a timestamp (``bpf_ktime_get_ns``) and a 64-byte header written;
- minimal: ``bpf_ringbuf_output`` of header + bytes, no wake-up: the least a capturing program does;
- reserve: minimal with the bytes copied straight into a ``bpf_ringbuf_reserve`` d record (fixed size).
The records are drained on a timer (as ours are) and counted: a variant whose copy failed or
whose records the ring refused would look cheap, so those counts are in each row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bench import probe_time
from bench.load import run_wrk
from bench.report import free_stem
from bench.run import REPO, short_commit
from bench.scenarios import LOAD_CPU, SERVER_CPU
from bench.servers import nginx
from hostagent.kernel.headers import find_kernel_headers

PAYLOAD = 256
VARIANTS = ("empty", "pid", "regs", "lookup", "copy", "stamp", "minimal", "reserve")
LEVEL = {name: i for i, name in enumerate(VARIANTS)}

# One program text; VARIANT (a number, LEVEL) decides what is compiled in.
FLOOR_C = r"""
#define PAYLOAD %(payload)d
struct hdr { u64 ts; u64 key; u32 len; u32 dir; u8 pad[40]; };
struct rec { struct hdr h; u8 data[PAYLOAD]; };
struct sregs { u64 r10, r9, r8, ax, cx, dx, si, di, orig_ax; };
BPF_RINGBUF_OUTPUT(events, 512);
BPF_PERCPU_ARRAY(scratch, struct rec, 1);
BPF_HASH(socks, u64, u64, MAP_ENTRIES);
BPF_PERCPU_ARRAY(fails, u64, 2);  /* 0: the copy faulted, 1: the ring refused the record */
static __always_inline void fail(int i) { u64 *c = fails.lookup(&i); if (c) *c += 1; }

static __always_inline int body(struct bpf_raw_tracepoint_args *ctx, u32 dir) {
#if VARIANT >= 1
    u64 id = bpf_get_current_pid_tgid();
    long ret = (int)ctx->args[1];
    if ((id >> 32) == SELF || ret <= 0)
        return 0;
#endif
#if VARIANT >= 2
    void *regs = (void *)bpf_task_pt_regs(bpf_get_current_task_btf());
    if (!regs)
        return 0;
    struct sregs sr;  /* as capture.c reads them: plain loads from the BTF pointer */
    __builtin_memcpy(&sr, regs + 56, sizeof(sr));
    u64 fd = sr.di;
    u64 buf = sr.si;
#endif
#if VARIANT >= 3
    u64 key = (id & 0xffffffff00000000ULL) | (u32)fd;
    u64 *seen = socks.lookup(&key);
    if (!seen) {
        u64 one = 1;
        socks.update(&key, &one);
    }
#endif
#if VARIANT >= 4
    u64 len = ret;
    if (len > PAYLOAD)
        len = PAYLOAD;
#if VARIANT == 7
    struct rec *r = events.ringbuf_reserve(sizeof(struct rec));
    if (!r) {
        fail(1);
        return 0;
    }
    if (bpf_probe_read_user(r->data, len, (void *)buf) != 0) {
        fail(0);
        events.ringbuf_discard(r, BPF_RB_NO_WAKEUP);
        return 0;
    }
    r->h.ts = bpf_ktime_get_ns();
    r->h.key = key;
    r->h.len = len;
    r->h.dir = dir;
    events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);
#else
    int zero = 0;
    struct rec *r = scratch.lookup(&zero);
    if (!r)
        return 0;
    if (bpf_probe_read_user(r->data, len, (void *)buf) != 0) {
        fail(0);
        return 0;
    }
#if VARIANT >= 5
    r->h.ts = bpf_ktime_get_ns();
    r->h.key = key;
    r->h.len = len;
    r->h.dir = dir;
#endif
#if VARIANT >= 6
    asm volatile("" : "+r"(len));
    if (len > PAYLOAD)
        return 0;
    if (events.ringbuf_output(r, sizeof(struct hdr) + len, BPF_RB_NO_WAKEUP) != 0)
        fail(1);
#endif
#endif
#endif
    return 0;
}

int floor_send(struct bpf_raw_tracepoint_args *ctx) { return body(ctx, 1); }
int floor_recv(struct bpf_raw_tracepoint_args *ctx) { return body(ctx, 0); }
"""


@dataclass(frozen=True)
class Load:
    """wrk's paced keep-alive load against nginx for each measured run."""

    url: str
    workdir: Path
    seconds: float = 3.0
    rate: float = 3000
    conns: int = 8


def _drain(bpf: Any, stop: threading.Event, seen: dict[str, int]) -> None:
    """Reads the ring as an agent would (a consumer moves the positions the producers read), and
    counts the records whose copy held bytes (the header's len), so that a variant whose copy
    failed is not taken for a cheap one."""
    import ctypes

    def got(ctx: Any, data: Any, size: int) -> int:
        n = ctypes.c_uint32.from_address(data + 16).value
        seen["records"] += 1
        seen["copied"] += n > 0 and ctypes.string_at(data + 64, min(n, 4)) in (b"GET ", b"HTTP")
        return 0

    bpf["events"].open_ring_buffer(got)
    while not stop.is_set():  # records come without wake-ups (as ours): read on a timer, as ours is
        bpf.ring_buffer_consume()
        time.sleep(0.005)
    bpf.ring_buffer_consume()


def measure_variant(variant: str, load: Load, map_entries: int = 65536) -> dict[str, Any]:
    """One variant's programs on both hooks for one paced wrk run: ns per run of each."""
    from bcc import BPF

    text = FLOOR_C % {"payload": PAYLOAD}
    bpf = BPF(text=text, cflags=[f"-DVARIANT={LEVEL[variant]}", f"-DSELF={os.getpid()}",
                                 f"-DMAP_ENTRIES={map_entries}", "-Wno-unused-variable"])
    stop = threading.Event()
    seen = {"records": 0, "copied": 0}
    drain = threading.Thread(target=_drain, args=(bpf, stop, seen), daemon=True)
    row: dict[str, Any] = {}
    try:
        fds = {}
        for fn, tp in (("floor_send", "sock_send_length"), ("floor_recv", "sock_recv_length")):
            bpf.attach_raw_tracepoint(tp=tp, fn_name=fn)
            fds[fn] = bpf.funcs[fn.encode()].fd
        drain.start()
        row = _timed_run(fds, load)
        fails = bpf["fails"]
        row["copy_faults"], row["ring_refused"] = (sum(fails[i]) for i in (0, 1))
    finally:
        stop.set()
        if drain.is_alive():
            drain.join()
        bpf.cleanup()
    if LEVEL[variant] >= LEVEL["minimal"]:
        # every call's record, holding the request's or the response's first bytes
        row["records_per_request"] = round(seen["records"] / max(row["requests"], 1), 2)
        row["copied_per_request"] = round(seen["copied"] / max(row["requests"], 1), 2)
    return row


def measure_ours(load: Load) -> dict[str, Any]:
    """Our socket and process groups (the real loader and programs, drained as the capacity
    recording drains them: bench/capacity.py) under the same load; the data programs' figures."""
    from bench.capacity import raw_recording

    with raw_recording(load.workdir) as (_, bpf):
        fds = {name.decode(): fn.fd for name, fn in bpf._bpf.funcs.items()
               if name in (b"sock__send_length", b"sock__recv_length")}
        return _timed_run(fds, load)


def _timed_run(fds: dict[str, int], load: Load) -> dict[str, Any]:
    with probe_time.stats_enabled():
        before = probe_time.snapshot(fds)
        res = run_wrk(load.url, seconds=load.seconds, conns=load.conns, rate=load.rate, cpus=LOAD_CPU,
                      workdir=load.workdir)
        after = probe_time.snapshot(fds)
    per = probe_time.per_request(before, after, res.requests)
    runs = {p["program"]: p for p in cast(list[dict[str, Any]], per["programs"])}
    out: dict[str, Any] = {"rps": round(res.rps), "requests": res.requests}
    for name, p in runs.items():
        side = "send" if "send" in name else "recv"
        out[f"{side}_ns_per_run"] = p["ns_per_run"]
        out[f"{side}_runs_per_request"] = p["runs_per_request"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=3000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--port", type=int, default=18930)
    ap.add_argument("--map-entries", type=int, default=65536, help="the lookup's hash map size (ours: 65536)")
    ap.add_argument("--variants", default=",".join((*VARIANTS, "ours")))
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where the JSON and the table go")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in LEVEL and n != "ours"]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join((*VARIANTS, 'ours'))}")
    workdir = Path(tempfile.mkdtemp(prefix="probe-floor-"))
    find_kernel_headers(None, workdir / "run")  # the tree the agent would compile against (BCC_KERNEL_SOURCE)
    srv = nginx(workdir / "nginx", args.port, SERVER_CPU)
    load = Load(f"http://127.0.0.1:{args.port}/index.html", workdir, args.seconds, args.rate, args.conns)
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    try:
        run_wrk(load.url, seconds=1.0, conns=load.conns, rate=load.rate, cpus=LOAD_CPU, workdir=workdir)  # warm-up
        for r in range(args.rounds):
            for n in names:
                row = measure_ours(load) if n == "ours" else measure_variant(n, load, args.map_entries)
                rows[n].append(row)
                print(json.dumps({"round": r, "variant": n, **row}), flush=True)
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    medians = summarize(rows)
    table = markdown(medians)
    print("\n" + table)
    meta = {"date": datetime.date.today().isoformat(), "commit": short_commit(), "kernel": os.uname().release,
            "rounds": args.rounds, "seconds": args.seconds, "rate": args.rate, "conns": args.conns,
            "payload": PAYLOAD, "map_entries": args.map_entries}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / free_stem(args.out, f"{meta['date']}-{meta['commit']}-floor")
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "medians": medians, "rounds": rows}, indent=1))
    stem.with_suffix(".md").write_text(
        f"Probe floor {meta['date']} at {meta['commit']} (kernel {meta['kernel']}; nginx keep-alive under wrk at "
        f"{args.rate:g} req/s, {args.conns} connections; {args.rounds} rounds x {args.seconds:g} s, medians; "
        f"`make bench-floor`)\n\n{table}\n")
    print(f"json: {stem.with_suffix('.json')}\nmd: {stem.with_suffix('.md')}")


def summarize(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Each variant's medians over its rounds (ns per run of each hook's program, req/s)."""
    return {n: {k: float(statistics.median([x[k] for x in rs if k in x] or [0]))
                for k in ("send_ns_per_run", "recv_ns_per_run", "rps")} for n, rs in rows.items()}


def markdown(medians: dict[str, dict[str, float]]) -> str:
    lines = ["| variant | send ns/run | recv ns/run | req/s |", "|---|---|---|---|"]
    for n, m in medians.items():
        lines.append(f"| {n} | {m['send_ns_per_run']:.0f} | {m['recv_ns_per_run']:.0f} | {m['rps']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
