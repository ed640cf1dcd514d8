"""Closes the kernel side did not see while the agent was backed off, found when it takes full effort.

Backed off from a hopeless overload (hostagent.overload), the socket path detaches
``sys_enter_close`` with the other programs a shed call has no use for (registry.DETACHED_BACKED_OFF):
nginx closes the file it serves once per request, and each of those closes built the tracepoint's
perf record and ran the program's two hash misses for a file the agent does not track. A socket
closed meanwhile keeps its ``sockets`` entry (the fd number looks tracked) and the tracker its
connection (no CLOSE came). When the close program is attached again, every live entry made before
that moment is checked against /proc: one whose fd is no longer an inet socket of that process with
the same ports had its close missed. The loader then closes its entry as the program would have
(CLOSED_GEN) and hands the tracker the CLOSE record the program would have emitted, stamped at the
check (late, never lost). On the socket path a missed close costs nothing else meanwhile: its data
programs run only for sockets, so a file given the fd number is never taken for the socket, and a
socket given it by socket(), accept() or dup2() overwrites the entry (dup2() emits the old one's
CLOSE); only a socket received from another process (SCM_RIGHTS) on that number before the check
would be taken for the closed one. Pure over a /proc root, so tests can use fixture trees.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from hostagent.model import EventKind
from hostagent.probes import events as ev
from hostagent.probes.seed import SeedInfo, seed_sockets

_OP_CLOSE = ev.SYSCALL_OPS.index("close")


def _same_socket(info: ev.SockInfo, live: SeedInfo) -> bool:
    """Whether the entry can be the socket /proc shows on its fd: each port the two both know agrees."""
    if info.local_port and live.local_port and info.local_port != live.local_port:
        return False
    return not (info.peer_port and live.peer_port and info.peer_port != live.peer_port)


def missed_closes(
    entries: Iterable[tuple[int, int, ev.SockInfo]],
    before_ns: int,
    proc_root: Path = Path("/proc"),
    skip_pid: Optional[int] = None,
) -> list[tuple[int, int, ev.SockInfo]]:
    """The (pid, fd, entry) of ``entries`` (the sockets map's) whose close went unseen: live (not
    CLOSED_GEN), made before ``before_ns`` (CLOCK_MONOTONIC, when the close program was back; a newer
    entry was made by a program that saw the fd then), of a process still running (an exit is seen
    by its own program, which ends every entry of the process), and whose fd is no longer an inet
    socket with the entry's ports."""
    old = [(pid, fd, info) for pid, fd, info in entries
           if info.gen != ev.CLOSED_GEN and info.ts < before_ns and pid != skip_pid]  # fmt: skip
    if not old:
        return []
    running = {pid for pid in {pid for pid, _, _ in old} if (proc_root / str(pid)).is_dir()}
    live = {(pid, fd): info for pid, fd, info in seed_sockets(proc_root, skip_pid, pids=running)}
    out = []
    for pid, fd, info in old:
        if pid not in running:
            continue
        now = live.get((pid, fd))
        if now is None or not _same_socket(info, now):
            out.append((pid, fd, info))
    return out


def close_record(pid: int, info: ev.SockInfo, ts_ns: int) -> bytes:
    """The CLOSE record sock__enter_close would have emitted for the entry (no comm, no cgroup id,
    named by the entry's id_fd), stamped ts_ns."""
    hdr = ev.EventHdr(
        ts_ns=ts_ns, pid=pid, tid=pid, fd=ctypes.c_int32(info.id_fd).value, kind=int(EventKind.CLOSE),
        syscall=_OP_CLOSE, family=info.family, sock_type=info.sock_type, peer_port=info.peer_port,
        local_port=info.local_port,
    )  # fmt: skip
    ctypes.memmove(hdr.peer_addr, info.peer_addr, 16)
    ctypes.memmove(hdr.local_addr, info.local_addr, 16)
    return bytes(hdr)
