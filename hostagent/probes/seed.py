"""Find inet sockets that were already open before the agent attached (pure over a /proc root).

/proc/<pid>/fd/<n> -> "socket:[inode]" says an fd is a socket but not which kind; the inode
tables in /proc/<pid>/net/{tcp,tcp6,udp,udp6} say which are inet and give the peer. Those
tables are per network namespace, so they are read once per namespace, through a pid in it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

_TABLES = (
    ("tcp", socket.AF_INET, socket.SOCK_STREAM),
    ("tcp6", socket.AF_INET6, socket.SOCK_STREAM),
    ("udp", socket.AF_INET, socket.SOCK_DGRAM),
    ("udp6", socket.AF_INET6, socket.SOCK_DGRAM),
)


@dataclass(frozen=True)
class SeedInfo:
    family: int
    sock_type: int
    peer_addr: bytes  # 4 or 16 bytes, network order; all zero when not connected
    peer_port: int
    local_addr: bytes = b""  # 4 or 16 bytes, network order; all zero for a wildcard bind
    local_port: int = 0  # 0 when not bound


def parse_hex_addr(text: str) -> tuple[bytes, int]:
    """'0100007F:1F90' -> (b'\\x7f\\x00\\x00\\x01', 8080). The kernel prints each 32-bit word of
    the address as a host-endian (little-endian here) hex number."""
    addr_hex, port_hex = text.split(":")
    raw = bytes.fromhex(addr_hex)
    addr = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return addr, int(port_hex, 16)


def parse_net_table(text: str, family: int, sock_type: int) -> dict[int, SeedInfo]:
    """One /proc/net/{tcp,udp}[6] file -> {inode: SeedInfo}."""
    out: dict[int, SeedInfo] = {}
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10:
            continue
        local, lport = parse_hex_addr(cols[1])  # local_address
        addr, port = parse_hex_addr(cols[2])  # rem_address
        out[int(cols[9])] = SeedInfo(family, sock_type, addr, port, local, lport)
    return out


def _inet_inodes(net_dir: Path) -> dict[int, SeedInfo]:
    found: dict[int, SeedInfo] = {}
    for name, fam, typ in _TABLES:
        try:
            found.update(parse_net_table((net_dir / name).read_text(), fam, typ))
        except OSError:
            continue
    return found


def seed_sockets(
    proc_root: Path, skip_pid: Optional[int] = None, pids: Optional[Iterable[int]] = None
) -> Iterator[tuple[int, int, SeedInfo]]:
    """Yield (pid, fd, SeedInfo) for every open inet socket of every process under proc_root
    (only of ``pids`` when given: hostagent.probes.missed checks the processes it has entries of)."""
    by_netns: dict[str, dict[int, SeedInfo]] = {}
    entries = proc_root.iterdir() if pids is None else (proc_root / str(pid) for pid in sorted(set(pids)))
    for entry in entries:
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == skip_pid:
            continue
        try:
            netns = os.readlink(entry / "ns" / "net")
        except OSError:
            netns = "?"  # fixture trees and kernels without ns links share the root table
        table = by_netns.get(netns)
        if table is None:
            net_dir = entry / "net" if (entry / "net").is_dir() else proc_root / "net"
            table = by_netns[netns] = _inet_inodes(net_dir)
        if not table:
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # exited, or a kernel thread
        for fd_path in fds:
            try:
                target = os.readlink(fd_path)
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            info = table.get(int(target[8:-1]))
            if info is not None:
                yield pid, int(fd_path.name), info
