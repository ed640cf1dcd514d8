"""The agent's own TCP connections, to tell its exports apart when a collector on this host
receives them.

The kernel programs skip the agent's own calls, but not the other end of them: a collector on the
same host (the usual place for one) answers every export on a socket of its own, and the spans of
those calls, exported in turn, made the next export's: a loop that never ended, one span per export
interval even on an idle host. A server call whose peer is one of the agent's own sockets, on the
port that socket talks to, is the agent's traffic and is left out (counted).

``own_endpoints`` lists this process's connected TCP sockets (read on demand);
``OwnConnections.is_own`` answers per server call from a set, rereading on a miss now and then (an
exporter connects once and keeps its connection).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Optional

from hostagent.export.otlp import endpoint_address
from hostagent.identity.proc_net import decode_endpoint

# (local address, local port, remote port) of one of the agent's TCP sockets: from a collector's
# side, the (peer address, peer port, local port) of a call the agent made to it.
OwnKey = tuple[str, int, int]


def _address(raw: str) -> str:
    """As the decoder gives peers (hostagent.probes.events.peer_str): ``::ffff:a.b.c.d`` -> a.b.c.d."""
    if raw.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(raw).ipv4_mapped
        except ValueError:
            return raw
        return str(mapped) if mapped is not None else raw
    return raw


def own_endpoints(fd_dir: str = "/proc/self/fd") -> set[OwnKey]:
    """(local address, local port, remote port) of this process's connected TCP sockets. Each is
    looked at through a duplicate of its fd (closed here), so the agent's own sockets are never
    touched; an fd closed or reused meanwhile is skipped."""
    out: set[OwnKey] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            if not os.readlink(f"{fd_dir}/{name}").startswith("socket:["):
                continue
            copy = os.dup(int(name))
        except (OSError, ValueError):
            continue
        try:  # (no ``continue`` inside the ``with``: mypyc does not compile one in a try/finally)
            with socket.socket(fileno=copy) as sock:  # family and type read from the socket
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                    local, remote = sock.getsockname(), sock.getpeername()
                    out.add((_address(local[0]), int(local[1]), int(remote[1])))
        except OSError:  # not connected (a listener), or not a socket any more
            continue
    return out


def process_endpoints(pid: int, proc_root: str = "/proc") -> set[OwnKey]:
    """own_endpoints for another process of the agent's (the export process): its socket inodes
    from its fds, their addresses from its network namespace's TCP tables (its fds cannot be
    duplicated from here)."""
    inodes: set[str] = set()
    try:
        names = os.listdir(f"{proc_root}/{pid}/fd")
    except OSError:
        return set()
    for name in names:
        try:
            link = os.readlink(f"{proc_root}/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out: set[OwnKey] = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc_root}/{pid}/net/{table}") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                        (address, port), (_, remote) = decode_endpoint(fields[1]), decode_endpoint(fields[2])
                        out.add((address, port, remote))
        except (OSError, ValueError, struct.error):
            continue
    return out


PROCESS_REFRESH_S = 0.05  # the export process's connections, read again on a miss at the collector's port


class OwnConnections:
    """Is a server call's peer one of the agent's own sockets? Called by the pipeline thread only.

    Reading the sockets costs a few ms (a readlink per fd; the agent holds hundreds of BPF fds),
    so a miss rereads them at most once per ``min_refresh_s`` only for a call received on a port
    the agent talks to (``ports``: the configured exporter's, and those its sockets were connected
    to at the last read), and at most once per ``other_refresh_s`` for any other call (a server
    call misses on every span of a busy server)."""

    def __init__(self, endpoints: Callable[[], set[OwnKey]] = own_endpoints,
                 clock: Callable[[], float] = time.monotonic, min_refresh_s: float = 1.0,
                 ports: frozenset[int] = frozenset(), other_refresh_s: float = 30.0) -> None:
        self._endpoints = endpoints
        self._clock = clock
        self._min_refresh_s = min_refresh_s
        self._other_refresh_s = other_refresh_s
        self._configured = ports
        self._ports: frozenset[int] = ports
        self._own: set[OwnKey] = set()
        self._read_at = float("-inf")
        self.refreshes = 0
        self._process: Any = None  # hostagent.export.process.ChildExporter (its ``pid``), when followed
        self.pids: frozenset[int] = frozenset()  # the agent's other processes: their client calls are its own
        self._pids_read_at = float("-inf")

    def follow(self, process: Any) -> None:
        """The export process's connections are the agent's too (read with its own at each refresh),
        and so are its client calls (``pids``, kept up to date as it is restarted)."""
        self._process = process
        process.on_child.append(self._started)
        if process.pid is not None:
            self._started(process.pid)

    def _started(self, pid: int) -> None:
        self.pids = frozenset({pid})
        self._read_at = float("-inf")  # its connection to the collector is new: read at the next miss

    def _read(self) -> set[OwnKey]:
        own = self._endpoints()
        for pid in self.pids:
            own |= process_endpoints(pid)
        return own

    def is_own(self, peer_address: str, peer_port: int, local_port: int) -> bool:
        key = (peer_address, peer_port, local_port)
        if key in self._own:
            return True
        now = self._clock()
        if self.pids and local_port in self._configured and now - self._pids_read_at >= PROCESS_REFRESH_S:
            # the export process connects at its first batch, maybe just after a refresh: its
            # connections alone are read again at once (a few fds), before the rate-limited full read
            self._pids_read_at = now
            for pid in self.pids:
                self._own |= process_endpoints(pid)
            if key in self._own:
                return True
        period = self._min_refresh_s if local_port in self._ports else self._other_refresh_s
        if now - self._read_at < period:
            return False
        self._read_at = now
        self._own = self._read()
        self._ports = self._configured | {remote for _, _, remote in self._own}
        self.refreshes += 1
        return key in self._own


def endpoint_port(endpoint: str, protocol: str) -> Optional[int]:
    """The port of an OTLP endpoint as configured (``http://host:4317``, ``host:4317``), or the
    port its exporter connects to without one; None when it cannot be read."""
    address = endpoint_address(endpoint, protocol)
    return address[1] if address is not None else None
