"""Which process holds a socket inode: the fds of /proc/PID/fd, read for a few pids or walked
for all (what a listener refresh costs when it has to: ~3 ms per 400 fds, more on a busy host).

A launcher may hold a listener for the process that serves it (systemd socket activation, inetd):
any other holder is preferred, and the launcher is named only when no other process holds the
socket (a service not started yet, or one that never holds the listener: Accept=yes, nowait).
"""

from __future__ import annotations

from typing import Optional

from hostagent.identity.procfs import ProcessGone, ProcFS

# Processes that hold listening sockets for others (socket activation): a walk prefers any other
# holder. PID 1 is one whatever its name; "systemd" is also a user manager or a container's init.
LAUNCHER_COMMS = frozenset({"systemd", "inetd", "xinetd"})


def is_launcher(procfs: ProcFS, pid: int) -> bool:
    """PID 1 or a known launcher's comm (reads /proc: not for the hot path)."""
    if pid == 1:
        return True
    try:
        return procfs.comm(pid) in LAUNCHER_COMMS
    except (OSError, ProcessGone):
        return False


def fd_targets_of(inodes: set[int]) -> dict[str, int]:
    """The fd links ("socket:[12345]") of these socket inodes -> the inode: an fd is matched by
    its link text, no parse of every link read."""
    return {f"socket:[{inode}]": inode for inode in inodes}


def holders_among(procfs: ProcFS, hinted: dict[int, set[int]], launched: dict[int, int]) -> dict[int, int]:
    """inode -> pid for the inodes each hinted pid holds (the pid a LISTEN event named for the
    same endpoint, nearly always the holder). A launcher's go to ``launched`` instead."""
    found: dict[int, int] = {}
    for pid, inodes in hinted.items():
        targets = fd_targets_of(inodes)
        held_by = launched if is_launcher(procfs, pid) else found
        for target in procfs.fd_targets(pid):
            held = targets.get(target)
            if held is not None:
                held_by[held] = pid
    return found


def scan_fds(procfs: ProcFS, wanted: set[int], launched: dict[int, int]) -> dict[int, int]:
    """inode -> its first (lowest listed) holder that is no launcher (pre-fork servers share
    a socket: the master), else the launcher (a socket-activated service not started yet)."""
    found: dict[int, int] = {}
    targets = fd_targets_of(wanted)
    for pid in procfs.pids():
        launcher: Optional[bool] = None  # read once per pid, and only for a holder
        for target in procfs.fd_targets(pid):
            inode = targets.get(target)
            if inode is None or inode in found:
                continue
            if launcher is None:
                launcher = is_launcher(procfs, pid)
            if not launcher:
                found[inode] = pid
            elif inode not in launched:
                launched[inode] = pid
        if len(found) == len(wanted):
            break
    for inode, pid in launched.items():
        if inode in wanted and inode not in found:
            found[inode] = pid
    return found
