"""What the kernel's process and LISTEN events teach the listener table (``ListenerMap``).

A LISTEN event names the process that moved a socket to LISTEN; ``ListenerMap.learn`` serves it
from the next lookup on, and its Service is read at once so that a peer lookup only peeks the
cache. Two launchers make that process the wrong one to name, and are followed here:

- A daemonising launcher (nginx as systemd's Type=forking starts it: daemon and master process
  on) listens, forks and exits: its LISTEN event's pid is gone when the ring is read (every
  50 ms), so ``learn`` refuses it and the first calls to the new server had no peer. Its ends are
  kept (bounded) for the child of its next FORK event, which holds the sockets now; a child gone
  too passes them on (double fork). Its EXIT drops them.
"""

from __future__ import annotations

from typing import Protocol

from hostagent.identity.listeners import ListenerMap
from hostagent.model import CaptureEvent, EventKind

# Bounds the listeners kept for a gone process's child: processes (their EXIT events clear them),
# and ends per process (a server listens on a few).
MAX_ORPHAN_LISTENERS = 64

_EXIT, _FORK, _LISTEN = EventKind.EXIT, EventKind.FORK, EventKind.LISTEN


class Services(Protocol):
    def service_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> object: ...


class ListenEvents:
    """Feeds ``listeners`` from the pipeline's non-data events (``on_event``, poll thread only)."""

    def __init__(self, listeners: ListenerMap, services: Services) -> None:
        self.listeners = listeners
        self.services = services  # ServiceCache: the listener's Service, read once at its event
        # pid gone before its LISTEN events were handled -> their (address, port): see _passed_on
        self._orphans: dict[int, list[tuple[str, int]]] = {}

    def on_event(self, event: CaptureEvent) -> None:
        kind = event.kind
        if kind == _LISTEN:
            # A server started listening: its first client call (handled after this event, queued
            # before the connection could exist) names it as the peer.
            self._learn(event.pid, (event.local_addr, event.local_port), event)
        elif kind == _FORK:
            if self._orphans:
                self._passed_on(event.size, event)  # size carries the parent's tgid
        elif kind == _EXIT:
            self._orphans.pop(event.pid, None)

    def _learn(self, pid: int, end: tuple[str, int], event: CaptureEvent) -> None:
        """``pid`` listens on ``end``: learnt with its Service, or, when ``pid`` is already gone,
        kept for the child it forked before going, which holds the socket now."""
        listeners = self.listeners
        if listeners.learn(end[0], end[1], pid):
            self.services.service_for(pid, event.comm, event.cgroup_id)
        elif not listeners.procfs.net_namespace(pid):  # gone (another namespace's process is not)
            ends = self._orphans.get(pid)
            if ends is None and len(self._orphans) < MAX_ORPHAN_LISTENERS:
                ends = self._orphans[pid] = []
            if ends is not None and len(ends) < MAX_ORPHAN_LISTENERS:
                ends.append(end)

    def _passed_on(self, parent: int, event: CaptureEvent) -> None:
        """A FORK of ``parent``, which listened and was gone when its LISTEN events were handled:
        the child has the sockets."""
        ends = self._orphans.pop(parent, None)
        for end in ends or ():
            self._learn(event.pid, end, event)
