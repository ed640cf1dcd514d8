"""One process -> its cache entry: read /proc (and Docker) once, name it, build its Service.

``ServiceReader.read(pid)`` is the only place the identity cache reads a live process. The other
constructors make an entry for a process that can no longer be read, from what a kernel event
said about it; they read nothing, and never invent what may differ (args, owner, start time).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from opentelemetry.sdk.resources import Resource

from hostagent.identity.cgroup import parse_cgroup
from hostagent.identity.docker import ContainerInfo, DockerMetadata
from hostagent.identity.interpreters import go_binary, interpreter_kind, runtime_name
from hostagent.identity.naming import RULE_EXECUTABLE, NameDecision, ServiceRule, decide_name
from hostagent.identity.procfs import ProcessGone, ProcessInfo, ProcFS
from hostagent.identity.resource import (
    UNKNOWN_SERVICE,
    FrozenResource,
    HostInfo,
    Service,
    as_child,
    build_service,
    unknown_service,
)

# A process that vanished mid-read, or /proc files cut short by an exit race: never an error
# on the lookup path, the process is just unknown (or its exec-time identity answers).
UNREADABLE = (ProcessGone, OSError, ValueError, IndexError)
GO_CACHE_MAX = 4096  # executables whose Go check is remembered (one ELF read each)


@dataclass(slots=True)
class Entry:
    service: Service
    resource: Optional[Resource] = None
    # What a child that is gone before it is read may share with this process
    # (ServiceCache._after_exec): its /proc/PID/cgroup text and its ENV_KEYS.
    cgroup_text: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def otel_resource(self) -> Resource:
        """Built once, with ``Resource(attrs)``: ``Resource.create()`` would merge the agent's
        own environment and SDK attributes into the process's."""
        if self.resource is None:
            self.resource = FrozenResource(self.service.attributes_dict())
        return self.resource


def _unknown_name(comm: str) -> str:
    return f"{UNKNOWN_SERVICE}:{comm}" if comm else UNKNOWN_SERVICE


class ServiceReader:
    """Reads and names processes. Not locked: the Go-check memo is the only state, and a lost
    update of it costs one more ELF read."""

    def __init__(
        self,
        procfs: ProcFS,
        docker: Optional[DockerMetadata],
        rules: list[ServiceRule],
        host: HostInfo,
    ) -> None:
        self.procfs = procfs
        self.docker = docker
        self.rules = rules
        self.host = host
        self._go_cache: dict[str, bool] = {}

    def read(self, pid: int) -> Entry:
        """The entry of a live process; raises one of ``UNREADABLE`` when it is gone."""
        proc = self.procfs.process_info(pid)
        return self._entry_of(proc, self._runtime(proc))

    def from_exec_event(self, proc: ProcessInfo) -> Entry:
        """A process gone before it was read: ``proc`` holds what its exec event and its parent
        said. No Go check: /proc/PID/exe is gone, and a failed look would be cached for the path."""
        base = os.path.basename(proc.exe)
        return self._entry_of(proc, runtime_name(base) if interpreter_kind(base) else None)

    def unknown_in(self, pid: int, comm: str, cgroup_path: Optional[str]) -> Entry:
        """A process never seen alive: ``unknown_service:<comm>``, in the container or unit of
        ``cgroup_path`` when known (container and unit are the cgroup's, whichever process of it
        calls; the comm is a thread's, so it never names the program)."""
        if cgroup_path is None:
            return Entry(unknown_service(self.host, pid, comm))
        proc = ProcessInfo(pid=pid, ppid=0, comm=comm, exe="", cmdline=(), start_ticks=0, creation_time=None,
                           uid=None, owner=None, cgroup_text=f"0::{cgroup_path}\n")  # fmt: skip
        return self._entry_of(proc, None, _unknown_name(comm))

    @staticmethod
    def child_of(parent_entry: Entry, pid: int, parent: int) -> Entry:
        """A forked child that is gone before it was read, named from its parent (no /proc)."""
        service = as_child(parent_entry.service, pid, parent)
        return Entry(service, cgroup_text=parent_entry.cgroup_text, env=parent_entry.env)

    def _entry_of(self, proc: ProcessInfo, runtime: Optional[str], unknown_name: str = "") -> Entry:
        """``unknown_name``: the name to give instead of the program's (not known)."""
        cgroup = parse_cgroup(proc.cgroup_text)
        container: Optional[ContainerInfo] = None
        if cgroup.container_id and self.docker is not None and cgroup.runtime in ("docker", None):
            container = self.docker.get(cgroup.container_id)
        decision = decide_name(self.rules, proc, container, cgroup)
        if unknown_name and decision.rule == RULE_EXECUTABLE:
            decision = NameDecision(unknown_name, decision.namespace, "unknown")
        service = build_service(proc, cgroup, container, decision, self.host, runtime)
        return Entry(service, cgroup_text=proc.cgroup_text, env=proc.env)

    def _runtime(self, proc: ProcessInfo) -> Optional[str]:
        exe_name = os.path.basename(proc.exe) if proc.exe else ""
        if interpreter_kind(exe_name):
            return runtime_name(exe_name)
        if not proc.exe:
            return None
        # Go: look at the binary through the process's own view of it (works for containers).
        key = proc.exe
        if key not in self._go_cache:
            if len(self._go_cache) > GO_CACHE_MAX:
                self._go_cache.clear()
            self._go_cache[key] = go_binary(self.procfs.path("proc", str(proc.pid), "exe"))
        return "go" if self._go_cache[key] else None
