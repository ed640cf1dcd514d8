"""Peer attributes of a client call to a local server: the listener table's pid -> its cached
Service, as ``service.peer.name`` / ``peer.service``."""

from __future__ import annotations

from typing import Any, Callable, Optional

from hostagent.identity.listeners import ListenerMap


class PeerResolver:
    """Peer attributes for a client call: listener pid -> cached Service, never computing it on
    the hot path (a miss asks the listener thread to warm the cache, so the next call has it)."""

    def __init__(self, listeners: ListenerMap, peek: Callable[[int], Optional[Any]]) -> None:
        self.listeners = listeners
        self.peek = peek  # ServiceCache.peek

    def attributes_for(self, address: str, port: int, self_pid: Optional[int] = None) -> dict[str, str]:
        pid = self.listeners.pid_for(address, port)
        if pid is None or pid == self_pid:
            return {}
        # A per-connection server's own Service first: it has often exited, and its pid may be
        # another process's by now.
        service = self.listeners.served_service(pid)
        if service is None:
            service = self.peek(pid)
        if service is None:
            self.listeners.request_warm(pid)
            return {}
        return peer_attributes(service.name, service.namespace)


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
