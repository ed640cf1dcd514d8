"""Which process serves a launcher's listener (socket activation), for the listener table.

A launcher (systemd as PID 1, inetd) may hold a listener for the process that serves it. Under
socket activation (Accept=no, inetd ``wait``) the service it starts accepts on the listener; with
systemd ``Accept=yes`` and inetd ``nowait`` the launcher accepts and hands each connection to a new
process (a per-connection server), which names the endpoint after it exits too: the next
connection goes to another process of the same service. ``ListenerMap`` holds one of these and
calls it under its swap lock; lookups read it without one (a dict read).
"""

from __future__ import annotations

from typing import Any, Optional

MAX_SERVED = 1024  # endpoints whose server an accept or a launcher's child named

Endpoint = tuple[str, int]


class ServedEndpoints:
    """endpoint -> (the pid serving it, the launcher that holds its listener)."""

    def __init__(self, bound: int = MAX_SERVED) -> None:
        self.bound = bound
        self._servers: dict[Endpoint, tuple[int, int]] = {}
        self._per_connection: dict[int, Any] = {}  # per-connection server -> its Service

    def take(self, key: Endpoint, pid: int, launcher: int, holder: Optional[int], service: Optional[Any]) -> bool:
        """``pid`` serves ``key``, whose listener ``launcher`` holds; ``holder``: the pid the table
        names now (the launcher, or a server of its). False when the table changed meanwhile or
        at the bound. ``service``: ``pid`` is a per-connection server with that Service."""
        served = self._servers.get(key)
        if holder != launcher and (served is None or served[1] != launcher):
            return False
        if served is None and len(self._servers) >= self.bound:
            return False
        if served is not None:
            self._per_connection.pop(served[0], None)
        if service is not None:
            self._per_connection[pid] = service
        self._servers[key] = (pid, launcher)
        return True

    def forget(self, key: Endpoint) -> None:
        """A new socket on ``key``: what was served on the old one is past."""
        past = self._servers.pop(key, None)
        if past is not None:
            self._per_connection.pop(past[0], None)

    def service_of(self, pid: int) -> Optional[Any]:
        """The Service of a per-connection server, alive or not."""
        return self._per_connection.get(pid)

    def launcher_of(self, key: Endpoint) -> Optional[int]:
        served = self._servers.get(key)
        return served[1] if served is not None else None

    def launchers(self) -> set[int]:
        return {launcher for _, launcher in self._servers.values()}

    def exited(self, pid: int) -> dict[Endpoint, int]:
        """``pid`` exited: the endpoints it served -> their launcher, to be named again. None
        for a per-connection server (its launcher hands the next connection to another of its)."""
        if pid in self._per_connection:
            return {}
        back: dict[Endpoint, int] = {}
        for key, (server, launcher) in list(self._servers.items()):
            if server == pid:
                del self._servers[key]
                back[key] = launcher
        return back

    def keep(self, table: dict[Endpoint, int]) -> None:
        """A refreshed ``table``: each server stays where the table names it or its launcher
        (named in ``table`` again), and is dropped where the listener closed or changed hands."""
        servers: dict[Endpoint, tuple[int, int]] = {}
        for key, (pid, launcher) in self._servers.items():
            if table.get(key) in (pid, launcher):
                table[key] = pid
                servers[key] = (pid, launcher)
        self._servers = servers
        self._per_connection = {pid: self._per_connection[pid] for pid, _ in servers.values()
                                if pid in self._per_connection}
