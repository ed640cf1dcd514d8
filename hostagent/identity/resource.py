"""Service and its OpenTelemetry resource attributes, built from what was read (pure).

Attributes follow semantic conventions v1.44. The systemd unit has no semconv key; it goes under
our own namespace as ``hostagent.systemd.unit`` (and ``hostagent.systemd.slice``).
``container.runtime`` is deprecated in v1.44 in favour of ``container.runtime.name``: both are
set, the old one for backends that still read it.
"""

from __future__ import annotations

import os
import platform
import uuid
from dataclasses import dataclass, replace
from typing import Any, Optional

from opentelemetry.sdk.resources import Resource

from hostagent import __version__
from hostagent.identity.cgroup import CgroupInfo
from hostagent.identity.docker import ContainerInfo
from hostagent.identity.naming import NameDecision, parse_resource_attributes
from hostagent.identity.procfs import ProcessInfo, ProcFS
from hostagent.model import AttributeValue

SYSTEMD_UNIT = "hostagent.systemd.unit"
SYSTEMD_SLICE = "hostagent.systemd.slice"
UNKNOWN_SERVICE = "unknown_service"
# Fixed namespace for service.instance.id (uuid5), so ids are stable across agent restarts.
INSTANCE_NAMESPACE = uuid.UUID("6f1c3f0e-5d1b-4c39-9a4e-6b8d2f6c1a77")

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm32",
         "armv6l": "arm32", "i386": "x86", "i686": "x86", "ppc64le": "ppc64", "ppc64": "ppc64",
         "s390x": "s390x", "ia64": "ia64"}


class FrozenResource(Resource):
    """A Resource whose hash is computed once.

    The OTLP encoder groups every batch by Resource through a dict, and ``Resource.__hash__``
    serialises all attributes to JSON on each call: ~11% of encoding time per span. Ours never
    change after construction, so the hash can be kept. Built with ``Resource(attrs)``, never
    ``Resource.create()``, which would merge the agent's own environment (OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES) and the SDK's telemetry.sdk.* into a traced process's identity.
    """

    def __init__(self, attributes: dict[str, Any], schema_url: Optional[str] = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return other is self or super().__eq__(other)


@dataclass(frozen=True)
class HostInfo:
    name: str
    id: str
    arch: str
    os_type: str = "linux"

    @classmethod
    def from_procfs(cls, procfs: ProcFS) -> HostInfo:
        machine = platform.machine()
        return cls(name=procfs.hostname(), id=procfs.machine_id(), arch=_ARCH.get(machine, machine))

    def attributes(self) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {
            "host.name": self.name,
            "host.arch": self.arch,
            "os.type": self.os_type,
            # Who produced the telemetry: the agent, not an SDK inside the process.
            "telemetry.sdk.name": "hostagent",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
        if self.id:
            attrs["host.id"] = self.id
        return attrs


@dataclass(frozen=True)
class Service:
    """Who made a call. ``attributes`` is the full resource (sorted pairs, so the object is
    immutable and hashable); ``decided_by`` says which naming rule chose ``name``."""

    name: str
    namespace: Optional[str]
    instance_id: str
    decided_by: str
    pid: int
    start_ticks: int
    container_id: Optional[str]
    systemd_unit: Optional[str]
    attributes: tuple[tuple[str, AttributeValue], ...]

    def attributes_dict(self) -> dict[str, AttributeValue]:
        return dict(self.attributes)


def instance_id(host_id: str, pid: int, start_ticks: int, container_id: Optional[str]) -> str:
    """Deterministic: the same process (or container) gets the same id after an agent restart."""
    key = f"container:{container_id}" if container_id else f"{host_id}:{pid}:{start_ticks}"
    return str(uuid.uuid5(INSTANCE_NAMESPACE, key))


def _set_present(attrs: dict[str, AttributeValue], pairs: tuple[tuple[str, Optional[AttributeValue]], ...]) -> None:
    """Only facts that were read: an empty or unknown one is left out, never exported blank."""
    for key, value in pairs:
        if value:
            attrs[key] = value


def _process_attributes(proc: ProcessInfo, runtime: Optional[str]) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {"process.pid": proc.pid}
    if proc.ppid or proc.start_ticks:  # both 0: known from an exec event only, parent unknown
        attrs["process.parent_pid"] = proc.ppid
    _set_present(attrs, (
        ("process.creation.time", proc.creation_time),
        ("process.executable.name", os.path.basename(proc.exe) if proc.exe else proc.comm),
        ("process.executable.path", proc.exe),
        ("process.command_args", tuple(proc.cmdline)),
        ("process.owner", proc.owner),
        ("process.runtime.name", runtime),
    ))  # fmt: skip
    return attrs


def _container_attributes(cgroup: CgroupInfo, container: Optional[ContainerInfo]) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {}
    if cgroup.container_id:
        attrs["container.id"] = cgroup.container_id
        _set_present(attrs, (("container.runtime.name", cgroup.runtime), ("container.runtime", cgroup.runtime)))
    if container is not None:
        _set_present(attrs, (
            ("container.name", container.name),
            ("container.image.name", container.image_name),
            ("container.image.tags", tuple(container.image_tags)),
            ("container.image.id", container.image_id),
        ))  # fmt: skip
    if cgroup.systemd_unit and not cgroup.container_id:
        # A container's unit is its runtime's (docker.service), not the service's own.
        attrs[SYSTEMD_UNIT] = cgroup.systemd_unit
        _set_present(attrs, ((SYSTEMD_SLICE, cgroup.slice),))
    return attrs


def build_service(
    proc: ProcessInfo,
    cgroup: CgroupInfo,
    container: Optional[ContainerInfo],
    decision: NameDecision,
    host: HostInfo,
    runtime: Optional[str],
) -> Service:
    """Assemble the Service and its resource attributes from what was read."""
    attrs: dict[str, AttributeValue] = {}
    # The app's own OTEL_RESOURCE_ATTRIBUTES first (service.version, deployment.environment.name...),
    # so that everything the agent knows for sure overrides them.
    attrs.update(parse_resource_attributes(proc.env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    instance = str(attrs.get("service.instance.id") or "") or instance_id(
        host.id, proc.pid, proc.start_ticks, cgroup.container_id
    )
    attrs.update(host.attributes())
    attrs["service.name"] = decision.name
    if decision.namespace:
        attrs["service.namespace"] = decision.namespace
    else:
        attrs.pop("service.namespace", None)
    attrs["service.instance.id"] = instance
    attrs.update(_process_attributes(proc, runtime))
    if cgroup.path:
        attrs["process.linux.cgroup"] = cgroup.path
    attrs.update(_container_attributes(cgroup, container))
    return Service(
        name=decision.name,
        namespace=decision.namespace,
        instance_id=instance,
        decided_by=decision.rule,
        pid=proc.pid,
        start_ticks=proc.start_ticks,
        container_id=cgroup.container_id,
        systemd_unit=cgroup.systemd_unit,
        attributes=tuple(sorted(attrs.items())),
    )


def unknown_service(host: HostInfo, pid: int, comm: str) -> Service:
    """A process never seen alive and nowhere known: ``unknown_service:<comm>`` (the semantic
    conventions' fallback name), with only what the kernel event said."""
    name = f"{UNKNOWN_SERVICE}:{comm}" if comm else UNKNOWN_SERVICE
    attrs: dict[str, AttributeValue] = dict(host.attributes())
    attrs.update({"service.name": name, "process.pid": pid})
    if comm:
        attrs["process.executable.name"] = comm
    return Service(name, None, instance_id(host.id, pid, 0, None), "unknown", pid, 0, None, None,
                   tuple(sorted(attrs.items())))  # fmt: skip


def as_child(parent: Service, pid: int, parent_pid: int) -> Service:
    """A forked child's Service from its parent's: the same program, so the same name and
    instance; only the process ids are the child's own."""
    attrs = parent.attributes_dict()
    attrs["process.pid"] = pid
    attrs["process.parent_pid"] = parent_pid
    attrs.pop("process.creation.time", None)  # the child's own is not known
    return replace(parent, pid=pid, start_ticks=0, attributes=tuple(sorted(attrs.items())))
