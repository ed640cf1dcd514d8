"""What following sockets across fork() costs on the hot path: a tight read() loop on a pipe.

Every read()/write() of every process runs the socket group's enter program; for an fd that is
not a tracked socket (files, pipes) it used to cost one ``sockets`` lookup. Fork inheritance
adds a ``fork_link`` lookup to that miss for every process, and for a child of a process with
sockets (a "linked" child) a ``no_inherit`` lookup too (the first miss per fd walks the
parent's snapshot and map; later misses stop at the stamped decision).

The loop runs in a worker process, 1-byte reads from a pipe kept full, measured side by side:
  none            no program attached
  before/plain    the capture.c of ``--before`` (git revision) attached; a plain process
  before/linked   same, the worker a forked child of a process with a socket
  after/plain     this checkout's capture.c; a plain process (pays the fork_link miss)
  after/linked    this checkout's; a linked child (pays fork_link + no_inherit hits)
Rounds alternate the variants so drift hits all alike; medians are reported.

Run as root from the checkout: ``.venv/bin/python -m bench.fork_inherit_cost [--rounds 5]``.
Timings on these machines are noisy (5-10 %): read the deltas, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hostagent.kernel import ensure_tracefs, find_kernel_headers
from hostagent.probes.loader import BpfCapture
from hostagent.probes.registry import DATA_PROGRAMS, GROUP_PROGRAMS, SOCKET_GROUP, SYSCALL_DATA
from hostagent.probes.sources import bpf_dir

# The commit before fork inheritance (cb03693 "follow sockets across fork()").
DEFAULT_BEFORE = "cb03693~1"
RUNTIME_DIR = Path("/dev/shm/hostagent-test-bpf")

WORKER = r"""
import os, socket, sys, time
linked, reads = sys.argv[1] == "linked", int(sys.argv[2])
def loop():
    r, w = os.pipe()
    chunk = 60000
    os.write(w, b"x" * chunk)
    read = os.read
    left, best = reads, None
    t0 = time.perf_counter_ns()
    while left > 0:
        n = min(chunk, left)
        for _ in range(n):
            read(r, 1)
        os.write(w, b"x" * n)  # one write per 60000 reads: noise
        left -= n
    return (time.perf_counter_ns() - t0) / reads
if linked:
    s = socket.socket()            # socket() exit: this process has sockets, its forks are followed
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        os.write(wfd, b"%f" % loop())
        os._exit(0)
    os.close(wfd)
    out = os.read(rfd, 100)
    os.waitpid(pid, 0)
    print(out.decode())
else:
    print(loop())
"""


def run_worker(kind: str, reads: int) -> float:
    out = subprocess.run([sys.executable, "-c", WORKER, kind, str(reads)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@contextmanager
def source_dir(rev: str) -> Iterator[Path]:
    """bpf/ as it was at ``rev`` (git show), in a temporary directory."""
    repo = bpf_dir().parent
    with tempfile.TemporaryDirectory(prefix="hostagent-bpf-") as tmp:
        for name in ("capture.c", "events.h"):
            text = subprocess.run(
                ["git", "-C", str(repo), "show", f"{rev}:bpf/{name}"], capture_output=True, text=True, check=True
            ).stdout
            (Path(tmp) / name).write_text(text)
        yield Path(tmp)


def load(src_dir: Path) -> tuple[BpfCapture, str]:
    """Compile the capture program found in src_dir (maps only; nothing attached)."""
    old = os.environ.get("HOSTAGENT_BPF_DIR")
    os.environ["HOSTAGENT_BPF_DIR"] = str(src_dir)
    try:
        headers = find_kernel_headers(None, RUNTIME_DIR)
        cap = BpfCapture(on_event=lambda _e: None, headers=headers, runtime_dir=RUNTIME_DIR)
        cap.load()
    finally:
        if old is None:
            del os.environ["HOSTAGENT_BPF_DIR"]
        else:
            os.environ["HOSTAGENT_BPF_DIR"] = old
    return cap, (src_dir / "capture.c").read_text()


@contextmanager
def attached(cap: BpfCapture, source: str) -> Iterator[None]:
    """The socket group's programs on the syscall data path (all tracepoints: the read()/write() enter
    programs this measures, the opens) that this source has, attached for the duration."""
    from bcc import BPF
    from bcc.libbcc import lib

    bpf: Any = cap._bpf
    fds = []
    for tp, fn in GROUP_PROGRAMS[SOCKET_GROUP] + DATA_PROGRAMS[SYSCALL_DATA]:
        if f"int {fn}(" not in source:
            continue  # a program the older source does not have
        prog = bpf.load_func(fn.encode(), BPF.TRACEPOINT)
        cat, event = tp.split(":")
        fd = lib.bpf_attach_tracepoint(prog.fd, cat.encode(), event.encode())
        if fd < 0:
            raise OSError(f"attaching {fn} to {tp} failed")
        fds.append(fd)
    cap.set_socket_enabled(True)
    try:
        yield
    finally:
        for fd in fds:
            lib.bpf_close_perf_event_fd(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default=DEFAULT_BEFORE, help="git revision of the 'before' bpf/")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reads", type=int, default=600_000, help="read() calls per measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    ensure_tracefs()
    with source_dir(args.before) as old_dir:
        before, before_src = load(old_dir)
        after, after_src = load(bpf_dir())
        results: dict[str, list[float]] = {}
        try:
            for _ in range(args.rounds):
                results.setdefault("none", []).append(run_worker("plain", args.reads))
                for name, cap, src in (("before", before, before_src), ("after", after, after_src)):
                    with attached(cap, src):
                        for kind in ("plain", "linked"):
                            results.setdefault(f"{name}/{kind}", []).append(run_worker(kind, args.reads))
        finally:
            before.close()
            after.close()
    base = statistics.median(results["none"])
    print(f"read() of 1 byte from a pipe, {args.reads} calls x {args.rounds} rounds, median ns/call")
    print(f"{'variant':<15} {'ns/read':>8} {'+ns vs none':>12} {'spread':>16}")
    for name, vals in results.items():
        med = statistics.median(vals)
        print(f"{name:<15} {med:8.1f} {med - base:12.1f}   {min(vals):6.1f}..{max(vals):6.1f}")


if __name__ == "__main__":
    main()
