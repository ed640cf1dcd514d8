"""Peer attributes of a client call to a local server: the listener table's pid -> its cached
Service, as ``service.peer.name`` / ``peer.service``.

Every client call with a peer asks (half the spans where a local client calls a local server):
the answer for (address, port) is memoised with the two generations it was computed under, the
listener table's (a refresh's swap, a LISTEN event, ``serve``, ``holder_exited``: everything the
table and the served map answer) and the live map's (``PidMaps``: a read, a Docker answer, an
eviction, an exit, an exec), each bumped after its change. A memo is used only while both are
the ones read before it was computed, so it answers what the lookup would for the same order of
events: a lookup that starts after a change returned sees it. A repeat is a dict read and two
comparisons, against the table's lookup, the served map's, the cache's lock and a new dict. Only
answers that found a Service are kept: a miss asks for a refresh or a warm-up, every time.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from hostagent.identity.listeners import ListenerMap

MAX_MEMO = 4096  # (address, port) answers kept; emptied when full (127.0.0.0/8 is many addresses)


class PeerResolver:
    """Peer attributes for a client call: listener pid -> cached Service, never computing it on
    the hot path (a miss asks the listener thread to warm the cache, so the next call has it).

    ``live``: what ``peek`` reads, with its ``generation`` (``ServiceCache.pids``); without it
    every call is looked up afresh."""

    def __init__(self, listeners: ListenerMap, peek: Callable[[int], Optional[Any]],
                 live: Optional[Any] = None) -> None:
        self.listeners = listeners
        self.peek = peek  # ServiceCache.peek
        self.live = live  # ServiceCache.pids (PidMaps): its generation
        # (address, port) -> (listener generation, live generation, pid, attributes)
        self._memo: dict[tuple[str, int], tuple[int, int, int, dict[str, str]]] = {}

    def attributes_for(self, address: str, port: int, self_pid: Optional[int] = None) -> dict[str, str]:
        """The peer's attributes (a dict shared by the calls that find the same answer: read
        it, do not change it)."""
        live = self.live
        if live is None:
            return self._lookup(address, port, self_pid)[1]
        memo = self._memo.get((address, port))
        if memo is not None and memo[0] == self.listeners.generation and memo[1] == live.generation:
            return {} if memo[2] == self_pid else memo[3]
        # the generations before the lookup: a change during it leaves the memo stale-marked
        listening, living = self.listeners.generation, live.generation
        pid, attrs, found = self._lookup(address, port, self_pid)
        if not found:
            return attrs
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[(address, port)] = (listening, living, pid, attrs)
        return attrs

    def _lookup(self, address: str, port: int, self_pid: Optional[int]) -> tuple[int, dict[str, str], bool]:
        """(pid, attributes, whether a Service was found): the lookup itself."""
        pid = self.listeners.pid_for(address, port)
        if pid is None:
            return 0, {}, False
        if pid == self_pid:
            return pid, {}, False
        # A per-connection server's own Service first: it has often exited, and its pid may be
        # another process's by now.
        service = self.listeners.served_service(pid)
        if service is None:
            service = self.peek(pid)
        if service is None:
            self.listeners.request_warm(pid)
            return pid, {}, False
        return pid, peer_attributes(service.name, service.namespace), True


def peer_attributes(service_name: Optional[str], namespace: Optional[str]) -> dict[str, str]:
    """Span attributes for the service on the other end. ``service.peer.name`` is the v1.44 key;
    ``peer.service`` (deprecated by it) is still what service-graph tooling such as the
    Collector's servicegraph connector reads by default, so both are set."""
    if not service_name:
        return {}
    attrs = {"service.peer.name": service_name, "peer.service": service_name}
    if namespace:
        attrs["service.peer.namespace"] = namespace
    return attrs
