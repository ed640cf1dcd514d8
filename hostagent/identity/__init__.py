"""hostagent.identity: pid -> Service (process, systemd unit, container, service.name).

Wiring (the daemon does this once):

    procfs = ProcFS("/")
    docker = DockerMetadata(DockerClient("/var/run/docker.sock")); docker.start()
    cache = ServiceCache(procfs, docker, parse_service_rules(raw_services, path))
    listeners = ListenerMap(procfs, on_new_pid=cache.service_for); listeners.start()
    peers = PeerResolver(listeners, cache.peek)

then ``cache.on_exec(pid)`` / ``cache.on_exit(pid)`` from the EXEC/EXIT events,
``cache.service_for(call.conn.pid)`` / ``cache.resource_for(pid)`` per call, ``cache.sweep()``
on a slow timer, and ``peers.attributes_for(peer.address, peer.port, pid)`` for client calls.
"""

from hostagent.identity.cgroup import CgroupInfo, parse_cgroup, unit_service_name
from hostagent.identity.docker import ContainerInfo, DockerClient, DockerMetadata
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.naming import (
    IdentityConfigError,
    NameDecision,
    ServiceRule,
    decide_name,
    parse_service_rules,
)
from hostagent.identity.peers import PeerResolver, peer_attributes
from hostagent.identity.procfs import ProcessGone, ProcessInfo, ProcFS
from hostagent.identity.resource import HostInfo, Service
from hostagent.identity.service import ServiceCache

__all__ = [
    "CgroupInfo",
    "ContainerInfo",
    "DockerClient",
    "DockerMetadata",
    "HostInfo",
    "IdentityConfigError",
    "ListenerMap",
    "NameDecision",
    "PeerResolver",
    "ProcFS",
    "ProcessGone",
    "ProcessInfo",
    "Service",
    "ServiceCache",
    "ServiceRule",
    "decide_name",
    "parse_cgroup",
    "parse_service_rules",
    "peer_attributes",
    "unit_service_name",
]
