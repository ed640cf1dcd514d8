"""pid -> Service (name + OpenTelemetry resource attributes), cached and kept true.

``ServiceCache.service_for(pid)`` is the hot-path call: a dict hit under a lock (well under 20 us
p99, see bench/identity_lookup.py), and for a pid looked up since the live entries last changed a
dict read without the lock (``recent``: see pid_maps.py; the pipeline reads it directly). A miss
-- the first call from a process the agent never saw exec -- reads /proc once (and Docker once
per new container). The lifecycle hooks keep entries true:

- ``on_exec(pid)``: recompute now, while the process is alive, so a process that lives 5 ms is
  still named from its own /proc (its exit may precede the first call the pipeline hands us);
- ``on_exit(pid)``: take the entry out of the live map, so a new process that reuses the pid is
  read afresh; the old entry stays in a small "recently exited" map for calls of the dead process
  that are still in the pipeline (served only while /proc shows no live process with that pid);
- Docker events (rename...) recompute the entries of that container's processes;
- ``sweep()``, on a timer, drops entries whose pid is gone or now has another start time (covers
  lost exit events).

A pid that is gone when first looked up (never seen alive, or a forked child named from its
parent) is answered without /proc for a while (pid_maps.GONE_TTL_S).

Where the work is: reader.py reads and names one process, resource.py builds its attributes,
pid_maps.py holds what is known per pid; this module decides which applies when.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

from opentelemetry.sdk.resources import Resource

from hostagent.identity.cgroup_ids import CgroupIds
from hostagent.identity.docker import DockerMetadata
from hostagent.identity.naming import ServiceRule
from hostagent.identity.pid_maps import PidMaps
from hostagent.identity.procfs import ProcessExiting, ProcessInfo, ProcFS
from hostagent.identity.reader import UNREADABLE, Entry, ServiceReader
from hostagent.identity.resource import HostInfo, Service
from hostagent.model import Call


def _program_behind(path: str, pid: int, parent: int, source: Optional[Entry]) -> str:
    """The program an exec'd file name stands for. An exec of ``/proc/self/exe`` (busybox's shell
    running an applet, Go's and runc's re-exec of themselves) names a link, not the program: its
    basename would name the service "exe". A fork runs its parent's program until it execs, so
    the link (self's, the pid's or the parent's) is the parent's program when that is known; any
    other /proc link, or an unknown parent, is no program ("": the comm names it)."""
    if not path.startswith("/proc/") or not path.endswith("/exe"):
        return path
    owner = path[len("/proc/") : -len("/exe")]
    if source is None or owner not in ("self", "thread-self", str(pid), str(parent)):
        return ""
    program = source.service.attributes_dict().get("process.executable.path")
    return program if isinstance(program, str) else ""


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
        self.host = host_info or HostInfo.from_procfs(procfs)
        self.reader = ServiceReader(procfs, docker, list(rules or []), self.host)
        self.pids = PidMaps(max_entries, max_exited, clock)
        # pid -> live entry, read without the lock: PidMaps.recent (the pipeline reads it too)
        self.recent = self.pids.recent
        self.cgroups = CgroupIds(procfs, clock)
        self.misses = 0
        if docker is not None:
            docker.subscribe(self.on_container_change)

    @property
    def evictions(self) -> int:
        return self.pids.evictions

    # --- hot path ----------------------------------------------------------------------------
    def service_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Service:
        """The Service of ``pid``; computed on first sight. ``comm`` and ``cgroup_id`` (from the
        connection's first kernel event) describe a process that is already gone and was never
        seen at exec (its exec event lost, or before the agent started):
        ``unknown_service:<comm>``, in its container or unit when the cgroup id resolves."""
        entry = self.recent.get(pid)
        if entry is None:
            entry = self.pids.hit(pid)
            if entry is None:
                entry = self._miss(pid, comm, cgroup_id)
        return entry.service

    def resource_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Resource:
        """The OpenTelemetry Resource of ``pid`` (built once per entry)."""
        entry = self.recent.get(pid)
        if entry is None:
            entry = self.pids.hit(pid)
            if entry is None:
                entry = self._miss(pid, comm, cgroup_id)
        return entry.otel_resource()

    def resource_of(self, call: Call) -> Resource:
        """The Resource of the process that made ``call``: every span's (``SpanBuilder``'s
        ``resource_for``); ``unknown_service`` for a call no process is known for."""
        conn = call.conn
        if conn is None:
            return self.resource_for(0)
        entry = self.recent.get(conn.pid)  # resource_for's first step, without its call
        if entry is not None:
            return entry.otel_resource()
        return self.resource_for(conn.pid, conn.comm, conn.cgroup_id)

    def peek(self, pid: int) -> Optional[Service]:
        """Cached Service or None; never reads /proc (for peer lookups on the hot path)."""
        entry = self.pids.peek(pid)
        return entry.service if entry is not None else None

    # --- lifecycle ---------------------------------------------------------------------------
    def on_exec(self, pid: int, comm: str = "", exe: str = "", cgroup_id: int = 0,
                parent: int = 0) -> Optional[Service]:  # fmt: skip
        """sched_process_exec: the pid now runs another program; read it now. ``comm``, ``exe``
        (the file name given to execve), ``cgroup_id`` and ``parent`` (the tgid that forked it,
        0 if unknown) come with the kernel event: when the process is already gone -- a burst of
        short processes can outrun the poll thread -- they and its parent still say what it was
        (``_after_exec``) instead of ``unknown_service``."""
        self.pids.forget(pid)
        if parent:
            self.on_fork(pid, parent)
        try:
            entry = self.reader.read(pid)
        except UNREADABLE as exc:
            if not (comm or exe):
                return None
            ppid = exc.ppid if isinstance(exc, ProcessExiting) else 0
            entry = self._after_exec(pid, comm, exe, cgroup_id, ppid)
            self.pids.put_exited(pid, entry)  # gone: served like the late calls of any exited process
            return entry.service
        self.pids.put(pid, entry)
        return entry.service

    def on_fork(self, child: int, parent: int) -> None:
        """A new process (fork, not a thread): remember its parent; nothing is read now."""
        self.pids.fork(child, parent)

    def on_cgroup(self, cgroup_id: int, path: str) -> None:
        """cgroup_mkdir (unified hierarchy): remember the path of the id its tasks' events carry."""
        self.cgroups.learn(cgroup_id, path)

    def on_exit(self, pid: int) -> None:
        """sched_process_exit of a thread-group leader."""
        self.pids.exit(pid)

    def on_container_change(self, container_id: Optional[str]) -> None:
        """Docker said a container changed (None: anything may have). Recompute its processes."""
        for pid in self.pids.live_pids(container_id):
            try:
                entry = self.reader.read(pid)
            except UNREADABLE:
                self.pids.exit(pid)
                continue
            self.pids.put(pid, entry)

    def sweep(self) -> int:
        """Drop live entries whose process is gone or whose pid was reused (lost exit events).
        Reads /proc/PID/stat per entry: call from a timer thread, not the hot path."""
        dropped = 0
        for pid, start in self.pids.live_start_ticks():
            try:
                alive = self.procfs.start_ticks(pid) == start
            except UNREADABLE:
                alive = False
            if not alive:
                self.pids.exit(pid)
                dropped += 1
        return dropped

    def stop(self) -> None:
        """End the cgroup rescans' thread (the daemon's stop)."""
        self.cgroups.stop()

    def __len__(self) -> int:
        return len(self.pids)

    # --- a process that cannot be read -------------------------------------------------------
    def _miss(self, pid: int, comm: str, cgroup_id: int) -> Entry:
        self.misses += 1
        answered = self.pids.gone_answer(pid, comm)
        if answered is not None:
            return answered
        try:
            entry = self.reader.read(pid)
        except UNREADABLE:
            exited = self.pids.exited(pid)
            if exited is not None:
                return exited
            entry = self._from_parent(pid) or self._unknown_in(pid, comm, cgroup_id)
            self.pids.remember_gone(pid, comm, entry)
            return entry
        self.pids.put(pid, entry)
        return entry

    def _from_parent(self, pid: int) -> Optional[Entry]:
        """The parent's service for a forked child that is already gone. Cheap (no /proc): made
        again when the gone answer expires, from the parent's current entry."""
        parent = self.pids.parent_of(pid)
        if parent is None:
            return None
        live, exited = self.pids.live_or_exited(parent)
        source = live or exited
        if source is None:
            return None
        return ServiceReader.child_of(source, pid, parent)

    def _after_exec(self, pid: int, comm: str, exe: str, cgroup_id: int, ppid: int) -> Entry:
        """A process gone (or exiting) before its exec event was handled: what the event says
        (the program, its cgroup id) and what its parent certainly shares with it. Nothing that
        may differ (args, owner, start time) is invented. The parent is the exec (or fork)
        event's, else ``ppid`` (an exiting process's /proc/PID/stat); its entry is cached or read
        now."""
        path = exe if exe.startswith("/") else ""
        parent = self.pids.parent_of(pid) or ppid
        source = self._parent_entry(parent, cgroup_id) if parent else None
        path = _program_behind(path, pid, parent, source)
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
        return self.reader.from_exec_event(proc)

    def _parent_entry(self, parent: int, cgroup_id: int) -> Optional[Entry]:
        """The parent's entry; read again when its cached cgroup is not the child's, as a process
        that moved itself after its exec (a shell writing $$ to a unit's cgroup.procs) has."""
        live, exited = self.pids.live_or_exited(parent)
        entry = live or exited
        if entry is not None and (live is None or not cgroup_id
                                  or self.cgroups.id_of(entry.cgroup_text) == cgroup_id):  # fmt: skip
            return entry  # an exited parent's pid may be another process's now: never re-read
        try:
            fresh = self.reader.read(parent)
        except UNREADABLE:
            return entry  # gone too: what was known of it
        if entry is not None and fresh.service.start_ticks != entry.service.start_ticks:
            return entry  # the pid is another process's now (its exit event not handled yet)
        self.pids.put(parent, fresh)
        return fresh

    def _unknown_in(self, pid: int, comm: str, cgroup_id: int) -> Entry:
        """A process never seen alive: in its container or unit when the cgroup id of its
        connection resolves."""
        return self.reader.unknown_in(pid, comm, self.cgroups.path_of(cgroup_id) if cgroup_id else None)
