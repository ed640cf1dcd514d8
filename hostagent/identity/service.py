"""pid -> Service (name + OpenTelemetry resource attributes), cached and kept true.

``ServiceCache.service_for(pid)`` is the hot-path call: a dict hit under a lock (well under 20 us
p99, see bench/identity_lookup.py). A miss -- the first call from a process the agent never saw
exec -- reads /proc once (and Docker once per new container). The lifecycle hooks keep entries
true:

- ``on_exec(pid)``: recompute now, while the process is alive, so a process that lives 5 ms is
  still named from its own /proc (its exit may precede the first call the pipeline hands us);
- ``on_exit(pid)``: take the entry out of the live map, so a new process that reuses the pid is
  read afresh; the old entry stays in a small "recently exited" map for calls of the dead process
  that are still in the pipeline (served only while /proc shows no live process with that pid);
- Docker events (rename...) recompute the entries of that container's processes;
- ``sweep()``, on a timer, drops entries whose pid is gone or now has another start time (covers
  lost exit events).

A pid that is gone when first looked up (never seen alive, or a forked child named from its
parent) is answered without /proc for ``GONE_TTL_S``: a burst of late calls from a process that
just exited costs one failed /proc read (~60 us here), not one per call. Exec and fork events for
that pid forget the answer at once; the TTL bounds how long a pid reused without either event
(a fork by a process that holds no socket) could be answered as the gone one.

Attributes follow semantic conventions v1.44. The systemd unit has no semconv key; it goes under
our own namespace as ``hostagent.systemd.unit`` (and ``hostagent.systemd.slice``).
``container.runtime`` is deprecated in v1.44 in favour of ``container.runtime.name``: both are
set, the old one for backends that still read it.
"""

from __future__ import annotations

import os
import platform
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Optional

from opentelemetry.sdk.resources import Resource

from hostagent import __version__
from hostagent.identity.cgroup import CgroupInfo, parse_cgroup
from hostagent.identity.cgroup_ids import CgroupIds
from hostagent.identity.docker import ContainerInfo, DockerMetadata
from hostagent.identity.interpreters import go_binary, interpreter_kind, runtime_name
from hostagent.identity.naming import (
    RULE_EXECUTABLE,
    NameDecision,
    ServiceRule,
    decide_name,
    parse_resource_attributes,
)
from hostagent.identity.procfs import ProcessExiting, ProcessGone, ProcessInfo, ProcFS
from hostagent.model import AttributeValue

SYSTEMD_UNIT = "hostagent.systemd.unit"
SYSTEMD_SLICE = "hostagent.systemd.slice"
UNKNOWN_SERVICE = "unknown_service"
GONE_TTL_S = 1.0  # how long a gone pid's made-up answer is served without looking at /proc again
GONE_COMMS = 8  # made-up answers kept per gone pid (one per comm it was seen with)
# Fixed namespace for service.instance.id (uuid5), so ids are stable across agent restarts.
INSTANCE_NAMESPACE = uuid.UUID("6f1c3f0e-5d1b-4c39-9a4e-6b8d2f6c1a77")

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm32",
         "armv6l": "arm32", "i386": "x86", "i686": "x86", "ppc64le": "ppc64", "ppc64": "ppc64",
         "s390x": "s390x", "ia64": "ia64"}


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


def build_service(
    proc: ProcessInfo,
    cgroup: CgroupInfo,
    container: Optional[ContainerInfo],
    decision: NameDecision,
    host: HostInfo,
    runtime: Optional[str],
) -> Service:
    """Pure: assemble the Service and its resource attributes from what was read."""
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
    attrs["process.pid"] = proc.pid
    if proc.ppid or proc.start_ticks:  # both 0: known from an exec event only, parent unknown
        attrs["process.parent_pid"] = proc.ppid
    if proc.creation_time:
        attrs["process.creation.time"] = proc.creation_time
    exe_name = os.path.basename(proc.exe) if proc.exe else proc.comm
    if exe_name:
        attrs["process.executable.name"] = exe_name
    if proc.exe:
        attrs["process.executable.path"] = proc.exe
    if proc.cmdline:
        attrs["process.command_args"] = tuple(proc.cmdline)
    if proc.owner:
        attrs["process.owner"] = proc.owner
    if runtime:
        attrs["process.runtime.name"] = runtime
    if cgroup.path:
        attrs["process.linux.cgroup"] = cgroup.path
    if cgroup.container_id:
        attrs["container.id"] = cgroup.container_id
        if cgroup.runtime:
            attrs["container.runtime.name"] = cgroup.runtime
            attrs["container.runtime"] = cgroup.runtime
    if container is not None:
        if container.name:
            attrs["container.name"] = container.name
        if container.image_name:
            attrs["container.image.name"] = container.image_name
        if container.image_tags:
            attrs["container.image.tags"] = tuple(container.image_tags)
        if container.image_id:
            attrs["container.image.id"] = container.image_id
    if cgroup.systemd_unit and not cgroup.container_id:
        attrs[SYSTEMD_UNIT] = cgroup.systemd_unit
        if cgroup.slice:
            attrs[SYSTEMD_SLICE] = cgroup.slice
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


# A process that vanished mid-read, or /proc files cut short by an exit race: never an error
# on the lookup path, the process is just unknown (or its exec-time identity answers).
_UNREADABLE = (ProcessGone, OSError, ValueError, IndexError)


@dataclass(slots=True)
class _Entry:
    service: Service
    resource: Optional[Resource] = None
    # What a child that is gone before it is read may share with this process (_after_exec):
    # its /proc/PID/cgroup text and its ENV_KEYS.
    cgroup_text: str = ""
    env: dict[str, str] = field(default_factory=dict)


class ServiceCache:
    """See module docstring. Thread-safe: the pipeline thread looks up, the Docker thread and the
    exec/exit consumer update."""

    def __init__(
        self,
        procfs: ProcFS,
        docker: Optional[DockerMetadata] = None,
        rules: Optional[list[ServiceRule]] = None,
        host_info: Optional[HostInfo] = None,
        max_entries: int = 8192,
        max_exited: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.procfs = procfs
        self.docker = docker
        self.rules = list(rules or [])
        self.host = host_info or HostInfo.from_procfs(procfs)
        self._max = max_entries
        self._max_exited = max_exited
        self._live: OrderedDict[int, _Entry] = OrderedDict()
        self._exited: OrderedDict[int, _Entry] = OrderedDict()
        # child pid -> parent pid, from fork events: a forked child that never execs and is gone
        # before its first call is read (a PostgreSQL backend, a forking httpd's handler) is
        # named from its parent instead of unknown_service.
        self._forked: OrderedDict[int, int] = OrderedDict()
        # pid -> (until, comm -> entry): what a pid found gone at its first lookup was answered.
        self._gone: OrderedDict[int, tuple[float, dict[str, _Entry]]] = OrderedDict()
        self._clock = clock
        self.cgroups = CgroupIds(procfs, clock)
        self._lock = threading.Lock()
        self._go_cache: dict[str, bool] = {}
        self.evictions = 0
        self.misses = 0
        if docker is not None:
            docker.subscribe(self.on_container_change)

    # --- hot path ----------------------------------------------------------------------------
    def service_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Service:
        """The Service of ``pid``; computed on first sight. ``comm`` and ``cgroup_id`` (from the
        connection's first kernel event) describe a process that is already gone and was never
        seen at exec (its exec event lost, or before the agent started):
        ``unknown_service:<comm>``, in its container or unit when the cgroup id resolves."""
        with self._lock:
            entry = self._live.get(pid)
            if entry is not None:
                self._live.move_to_end(pid)
                return entry.service
        return self._miss(pid, comm, cgroup_id).service

    def resource_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Resource:
        """The OpenTelemetry Resource of ``pid`` (built once per entry, with ``Resource(attrs)``:
        ``Resource.create()`` would merge the agent's own environment and SDK attributes)."""
        with self._lock:
            entry = self._live.get(pid)
            if entry is not None:
                self._live.move_to_end(pid)
                if entry.resource is None:
                    entry.resource = Resource(entry.service.attributes_dict())
                return entry.resource
        entry = self._miss(pid, comm, cgroup_id)
        if entry.resource is None:
            entry.resource = Resource(entry.service.attributes_dict())
        return entry.resource

    def peek(self, pid: int) -> Optional[Service]:
        """Cached Service or None; never reads /proc (for peer lookups on the hot path)."""
        with self._lock:
            entry = self._live.get(pid)
            return entry.service if entry is not None else None

    # --- lifecycle ---------------------------------------------------------------------------
    def on_exec(self, pid: int, comm: str = "", exe: str = "", cgroup_id: int = 0,
                parent: int = 0) -> Optional[Service]:  # fmt: skip
        """sched_process_exec: the pid now runs another program; read it now. ``comm``, ``exe``
        (the file name given to execve), ``cgroup_id`` and ``parent`` (the tgid that forked it,
        0 if unknown) come with the kernel event: when the process is already gone -- a burst of
        short processes can outrun the poll thread -- they and its parent still say what it was
        (``_after_exec``) instead of ``unknown_service``."""
        with self._lock:
            self._live.pop(pid, None)
            self._exited.pop(pid, None)
            self._gone.pop(pid, None)
        if parent:
            self.on_fork(pid, parent)
        try:
            entry = self._compute(pid)
        except _UNREADABLE as exc:
            if not (comm or exe):
                return None
            ppid = exc.ppid if isinstance(exc, ProcessExiting) else 0
            entry = self._after_exec(pid, comm, exe, cgroup_id, ppid)
            with self._lock:  # gone: served like the late calls of any exited process
                self._exited[pid] = entry
                while len(self._exited) > self._max_exited:
                    self._exited.popitem(last=False)
            return entry.service
        self._put(pid, entry)
        return entry.service

    def on_fork(self, child: int, parent: int) -> None:
        """A new process (fork, not a thread): remember its parent; nothing is read now."""
        with self._lock:
            self._gone.pop(child, None)  # a new process has the pid now
            self._forked[child] = parent
            self._forked.move_to_end(child)
            while len(self._forked) > self._max_exited:
                self._forked.popitem(last=False)

    def on_cgroup(self, cgroup_id: int, path: str) -> None:
        """cgroup_mkdir (unified hierarchy): remember the path of the id its tasks' events carry."""
        self.cgroups.learn(cgroup_id, path)

    def on_exit(self, pid: int) -> None:
        """sched_process_exit of a thread-group leader."""
        with self._lock:
            entry = self._live.pop(pid, None)
            if entry is not None:
                self._exited[pid] = entry
                self._exited.move_to_end(pid)
                while len(self._exited) > self._max_exited:
                    self._exited.popitem(last=False)

    def on_container_change(self, container_id: Optional[str]) -> None:
        """Docker said a container changed (None: anything may have). Recompute its processes."""
        with self._lock:
            pids = [
                pid
                for pid, entry in self._live.items()
                if entry.service.container_id is not None
                and (container_id is None or entry.service.container_id == container_id)
            ]
        for pid in pids:
            try:
                entry = self._compute(pid)
            except _UNREADABLE:
                self.on_exit(pid)
                continue
            self._put(pid, entry)

    def sweep(self) -> int:
        """Drop live entries whose process is gone or whose pid was reused (lost exit events).
        Reads /proc/PID/stat per entry: call from a timer thread, not the hot path."""
        with self._lock:
            snapshot = [(pid, entry.service.start_ticks) for pid, entry in self._live.items()]
        dropped = 0
        for pid, start in snapshot:
            try:
                alive = self.procfs.start_ticks(pid) == start
            except _UNREADABLE:
                alive = False
            if not alive:
                self.on_exit(pid)
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._live)

    # --- internals ---------------------------------------------------------------------------
    def _miss(self, pid: int, comm: str, cgroup_id: int) -> _Entry:
        self.misses += 1
        with self._lock:
            gone = self._gone.get(pid)
        if gone is not None:
            entry = gone[1].get(comm)
            if entry is not None and self._clock() < gone[0]:
                return entry
        try:
            entry = self._compute(pid)
        except _UNREADABLE:
            with self._lock:
                exited = self._exited.get(pid)
            if exited is not None:
                return exited
            entry = self._from_parent(pid) or self._unknown_in(pid, comm, cgroup_id)
            self._remember_gone(pid, comm, entry)
            return entry
        self._put(pid, entry)
        return entry

    def _remember_gone(self, pid: int, comm: str, entry: _Entry) -> None:
        now = self._clock()
        with self._lock:
            gone = self._gone.get(pid)
            if gone is None or now >= gone[0] or len(gone[1]) >= GONE_COMMS:
                gone = (now + GONE_TTL_S, {})
            gone[1][comm] = entry
            self._gone[pid] = gone
            self._gone.move_to_end(pid)
            while len(self._gone) > self._max_exited:
                self._gone.popitem(last=False)

    def _from_parent(self, pid: int) -> Optional[_Entry]:
        """The parent's service for a forked child that is already gone: the same program, so
        the same name and instance; only the process ids are the child's own. Cheap (no /proc):
        made again when the gone answer expires, from the parent's current entry."""
        with self._lock:
            parent = self._forked.get(pid)
            source = None
            if parent is not None:
                source = self._live.get(parent) or self._exited.get(parent)
        if parent is None or source is None:
            return None
        attrs = source.service.attributes_dict()
        attrs["process.pid"] = pid
        attrs["process.parent_pid"] = parent
        attrs.pop("process.creation.time", None)  # the child's own is not known
        service = replace(source.service, pid=pid, start_ticks=0, attributes=tuple(sorted(attrs.items())))
        # _miss remembers it with the other answers for gone pids
        return _Entry(service, cgroup_text=source.cgroup_text, env=source.env)

    def _put(self, pid: int, entry: _Entry) -> None:
        with self._lock:
            self._exited.pop(pid, None)
            self._gone.pop(pid, None)
            self._live[pid] = entry
            self._live.move_to_end(pid)
            while len(self._live) > self._max:
                self._live.popitem(last=False)
                self.evictions += 1

    def _runtime(self, proc: ProcessInfo) -> Optional[str]:
        exe_name = os.path.basename(proc.exe) if proc.exe else ""
        if interpreter_kind(exe_name):
            return runtime_name(exe_name)
        if not proc.exe:
            return None
        # Go: look at the binary through the process's own view of it (works for containers).
        key = proc.exe
        if key not in self._go_cache:
            if len(self._go_cache) > 4096:
                self._go_cache.clear()
            self._go_cache[key] = go_binary(self.procfs.path("proc", str(proc.pid), "exe"))
        return "go" if self._go_cache[key] else None

    def _compute(self, pid: int) -> _Entry:
        proc = self.procfs.process_info(pid)
        return self._entry_of(proc, self._runtime(proc))

    def _entry_of(self, proc: ProcessInfo, runtime: Optional[str], unknown_name: str = "") -> _Entry:
        """``unknown_name``: the name to give instead of the program's (not known)."""
        cgroup = parse_cgroup(proc.cgroup_text)
        container: Optional[ContainerInfo] = None
        if cgroup.container_id and self.docker is not None and cgroup.runtime in ("docker", None):
            container = self.docker.get(cgroup.container_id)
        decision = decide_name(self.rules, proc, container, cgroup)
        if unknown_name and decision.rule == RULE_EXECUTABLE:
            decision = NameDecision(unknown_name, decision.namespace, "unknown")
        service = build_service(proc, cgroup, container, decision, self.host, runtime)
        return _Entry(service, cgroup_text=proc.cgroup_text, env=proc.env)

    def _after_exec(self, pid: int, comm: str, exe: str, cgroup_id: int, ppid: int) -> _Entry:
        """A process gone (or exiting) before its exec event was handled: what the event says
        (the program, its cgroup id) and what its parent certainly shares with it. Nothing that
        may differ (args, owner, start time) is invented. The parent is the exec (or fork)
        event's, else ``ppid`` (an exiting process's /proc/PID/stat); its entry is cached or read
        now."""
        path = exe if exe.startswith("/") else ""
        with self._lock:
            parent = self._forked.get(pid) or ppid
        source = self._parent_entry(parent, cgroup_id) if parent else None
        cgroup_text = ""
        env: dict[str, str] = {}
        if source is not None and cgroup_id and self.cgroups.id_of(source.cgroup_text) == cgroup_id:
            # The kernel saw the exec in the parent's very cgroup (unified hierarchy): the child
            # has the parent's cgroups (a child inherits every hierarchy's at fork, and systemd
            # and container runtimes move a process in all of them at once), so its container
            # or unit. The environment is inherited at fork and kept by exec unless the caller
            # passes another one (env -i, a runtime's exec): an assumption, made only here,
            # where no runtime moved the child, and only for the keys that name a service.
            cgroup_text = source.cgroup_text
            env = source.env
        elif cgroup_id:
            unified = self.cgroups.path_of(cgroup_id)  # a container's process: not its parent's
            if unified is not None:
                cgroup_text = f"0::{unified}\n"
        proc = ProcessInfo(pid=pid, ppid=parent, comm=comm, exe=path, cmdline=(), start_ticks=0, creation_time=None,
                           uid=None, owner=None, cgroup_text=cgroup_text, env=env)  # fmt: skip
        base = os.path.basename(path)
        # No Go check: /proc/PID/exe is gone, and a failed look would be cached for the path.
        return self._entry_of(proc, runtime_name(base) if interpreter_kind(base) else None)

    def _parent_entry(self, parent: int, cgroup_id: int) -> Optional[_Entry]:
        """The parent's entry; read again when its cached cgroup is not the child's, as a process
        that moved itself after its exec (a shell writing $$ to a unit's cgroup.procs) has."""
        with self._lock:
            live = self._live.get(parent)
            entry = live or self._exited.get(parent)
        if entry is not None and (live is None or not cgroup_id
                                  or self.cgroups.id_of(entry.cgroup_text) == cgroup_id):  # fmt: skip
            return entry  # an exited parent's pid may be another process's now: never re-read
        try:
            fresh = self._compute(parent)
        except _UNREADABLE:
            return entry  # gone too: what was known of it
        if entry is not None and fresh.service.start_ticks != entry.service.start_ticks:
            return entry  # the pid is another process's now (its exit event not handled yet)
        self._put(parent, fresh)
        return fresh

    def _unknown_in(self, pid: int, comm: str, cgroup_id: int) -> _Entry:
        """A process never seen alive: ``_unknown``, but in its container or unit when the
        cgroup id of its connection resolves (container and unit are the cgroup's, whichever
        process of it calls; the comm is a thread's, so it never names the program)."""
        path = self.cgroups.path_of(cgroup_id) if cgroup_id else None
        if path is None:
            return _Entry(self._unknown(pid, comm))
        proc = ProcessInfo(pid=pid, ppid=0, comm=comm, exe="", cmdline=(), start_ticks=0, creation_time=None,
                           uid=None, owner=None, cgroup_text=f"0::{path}\n")  # fmt: skip
        return self._entry_of(proc, None, f"{UNKNOWN_SERVICE}:{comm}" if comm else UNKNOWN_SERVICE)

    def _unknown(self, pid: int, comm: str) -> Service:
        name = f"{UNKNOWN_SERVICE}:{comm}" if comm else UNKNOWN_SERVICE
        attrs: dict[str, AttributeValue] = dict(self.host.attributes())
        attrs.update({"service.name": name, "process.pid": pid})
        if comm:
            attrs["process.executable.name"] = comm
        return Service(name, None, instance_id(self.host.id, pid, 0, None), "unknown", pid, 0, None, None,
                       tuple(sorted(attrs.items())))

