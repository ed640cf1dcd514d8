"""Ports for the servers a test starts, free on this host and held by no other test run.

Two runs on one host (CI jobs, engineers, an acceptance run beside a suite) with fixed ports took
each other's servers. A port is handed out only when no one listens on it and no other process of
a run holds its lock: a flock on a file per port, held until this process exits (a crashed run's
locks go with it). Ports come from below the kernel's ephemeral range, which an outgoing
connection's local port never takes, so nothing but a listener can hold one later.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
from pathlib import Path

LOCKS = Path("/tmp/hostagent-test-ports")
FIRST, LAST = 30000, 32767  # below Linux's default ephemeral range (32768-60999)
_held: list[int] = []  # lock file descriptors: a port is ours while its fd stays open


def free_port() -> int:
    """A port free on 127.0.0.1 and ::1, reserved for this process."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports, each as ``free_port``."""
    LOCKS.mkdir(exist_ok=True)
    first, last = FIRST, min(LAST, _ephemeral_start() - 1)
    span = last - first + 2 - count  # the bases from which count ports fit
    start = random.randrange(span)
    for offset in range(span):
        base = first + (start + offset) % span
        fds = _reserve(base, count)
        if fds is not None:
            _held.extend(fds)
            return base
    raise AssertionError(f"no {count} consecutive free ports in {first}-{last}")


def _reserve(base: int, count: int) -> list[int] | None:
    fds: list[int] = []
    for port in range(base, base + count):
        fd = _lock(port)
        if fd is None or not listen_free(port):
            for held in fds + ([fd] if fd is not None else []):
                os.close(held)
            return None
        fds.append(fd)
    return fds


def _lock(port: int) -> int | None:
    fd = os.open(LOCKS / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def listen_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (of loopback's v4 and v6 addresses). With
    SO_REUSEADDR, as every server here binds: a port whose last connection is in TIME_WAIT is free."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if family == socket.AF_INET6 and exc.errno == 99:  # EADDRNOTAVAIL: no IPv6 loopback
                    continue
                return False
    return True


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LAST + 1
