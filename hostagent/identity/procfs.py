"""Every /proc, /sys and /etc read of the identity stage, through one configurable root.

``ProcFS(root="/")`` reads the live system; ``ProcFS(root="tests/fixtures/proc/<case>")`` reads a
fixture tree laid out the same way (``proc/<pid>/cmdline``, ``proc/stat``, ``etc/machine-id``...),
which is how the naming rules are tested without the processes they describe.

Reads are small and only happen when a process is first seen or execs, never per call.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional, Union

# The only environment variables identity needs. Reading just these keeps secrets that live in
# environments (tokens, passwords) out of the agent's memory.
ENV_KEYS = ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")


class ProcessGone(LookupError):
    """The process exited (or never existed) before it could be read."""


class ProcessExiting(ProcessGone):
    """The process was exiting while it was read: /proc still answered, but from a dying task
    (see ``ProcFS.process_info``). ``ppid`` is still its parent's."""

    def __init__(self, pid: int, ppid: int) -> None:
        super().__init__(pid)
        self.ppid = ppid


# PF_EXITING (include/linux/sched.h), in the flags field of /proc/PID/stat: set by do_exit()
# before it drops the task's memory, files and cgroups.
PF_EXITING = 0x4


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A snapshot of one process, taken once."""

    pid: int
    ppid: int
    comm: str
    exe: str  # resolved /proc/PID/exe, "" when unreadable (kernel threads, permissions)
    cmdline: tuple[str, ...]
    start_ticks: int  # field 22 of /proc/PID/stat: clock ticks after boot; (pid, start) is unique
    creation_time: Optional[str]  # ISO 8601 UTC, from btime + start_ticks / CLK_TCK
    uid: Optional[int]
    owner: Optional[str]
    cgroup_text: str
    env: dict[str, str] = field(default_factory=dict)  # only ENV_KEYS


def stat_fields(text: str) -> list[str]:
    """The fields of /proc/PID/stat (or .../task/TID/stat) from field 3 (state) on: index i is
    field i + 3. comm (field 2) may hold spaces and parentheses, so split after the *last* ')'.
    Raises ValueError when there is no ')'."""
    return text[text.rindex(")") + 2 :].split()


def parse_stat(text: str) -> tuple[int, int]:
    """(ppid, start_ticks) from /proc/PID/stat: fields 4 and 22."""
    tail = stat_fields(text)
    return int(tail[1]), int(tail[19])


def parse_stat_flags(text: str) -> int:
    """The task flags (PF_*) from /proc/PID/stat: field 9."""
    return int(stat_fields(text)[6])


def parse_environ(raw: bytes, keys: tuple[str, ...] = ENV_KEYS) -> dict[str, str]:
    wanted = {key.encode() + b"=": key for key in keys}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        for prefix, key in wanted.items():
            if item.startswith(prefix):
                env[key] = item[len(prefix) :].decode("utf-8", "replace")
    return env


def _owner(uid: Optional[int]) -> Optional[str]:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class ProcFS:
    """Reads under ``root``. ``clock_ticks`` is sysconf(SC_CLK_TCK) (100 on Linux everywhere that
    matters; settable so fixture trees stay portable)."""

    def __init__(self, root: str = "/", clock_ticks: Optional[int] = None) -> None:
        self.root = root
        self.clock_ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
        self._btime: Optional[int] = None

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def _pid_path(self, pid: int, name: str) -> str:
        return os.path.join(self.root, "proc", str(pid), name)

    def read_bytes(self, *parts: str) -> bytes:
        with open(self.path(*parts), "rb") as handle:
            return handle.read()

    def read_text(self, *parts: str) -> str:
        return self.read_bytes(*parts).decode("utf-8", "replace")

    def _pid_bytes(self, pid: int, name: str) -> bytes:
        try:
            with open(self._pid_path(pid, name), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise ProcessGone(pid) from exc

    # --- per process -------------------------------------------------------------------------
    def cmdline(self, pid: int) -> tuple[str, ...]:
        raw = self._pid_bytes(pid, "cmdline")
        return tuple(arg.decode("utf-8", "replace") for arg in raw.rstrip(b"\0").split(b"\0") if raw)

    def comm(self, pid: int) -> str:
        return self._pid_bytes(pid, "comm").decode("utf-8", "replace").rstrip("\n")

    def exe(self, pid: int) -> str:
        try:
            target = os.readlink(self._pid_path(pid, "exe"))
        except FileNotFoundError as exc:
            # Kernel threads have no exe (ENOENT too): only a missing pid directory means gone.
            if not os.path.isdir(os.path.join(self.root, "proc", str(pid))):
                raise ProcessGone(pid) from exc
            return ""
        except OSError:  # EACCES
            return ""
        return target[: -len(" (deleted)")] if target.endswith(" (deleted)") else target

    def environ(self, pid: int) -> dict[str, str]:
        try:
            return parse_environ(self._pid_bytes(pid, "environ"))
        except PermissionError:
            return {}

    def stat(self, pid: int) -> tuple[int, int]:
        return parse_stat(self._pid_bytes(pid, "stat").decode("utf-8", "replace"))

    def start_ticks(self, pid: int) -> int:
        return self.stat(pid)[1]

    def uid(self, pid: int) -> Optional[int]:
        for line in self._pid_bytes(pid, "status").decode("utf-8", "replace").splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])  # real uid
        return None

    def cgroup(self, pid: int) -> str:
        return self._pid_bytes(pid, "cgroup").decode("utf-8", "replace")

    def creation_time(self, start_ticks: int) -> Optional[str]:
        btime = self.boot_time()
        if btime is None:
            return None
        seconds = btime + start_ticks / self.clock_ticks
        return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")

    def process_info(self, pid: int) -> ProcessInfo:
        """Everything identity needs about ``pid``; raises ProcessGone if it is not there, and
        ProcessExiting if it was exiting: a task past exit_mm() still has its /proc directory
        but reads as an empty cmdline and environ and no exe, and past cgroup_exit() as the root
        cgroup (cgroup v1), which would be cached as the truth about it. do_exit() sets
        PF_EXITING before either, so stat is read last: clear then, every read before was of
        the live process."""
        uid = self.uid(pid)
        comm = self.comm(pid)
        exe = self.exe(pid)
        cmdline = self.cmdline(pid)
        cgroup_text = self.cgroup(pid)
        env = self.environ(pid)
        text = self._pid_bytes(pid, "stat").decode("utf-8", "replace")
        ppid, start = parse_stat(text)
        if parse_stat_flags(text) & PF_EXITING:
            raise ProcessExiting(pid, ppid)
        return ProcessInfo(
            pid=pid,
            ppid=ppid,
            comm=comm,
            exe=exe,
            cmdline=cmdline,
            start_ticks=start,
            creation_time=self.creation_time(start),
            uid=uid,
            owner=_owner(uid),
            cgroup_text=cgroup_text,
            env=env,
        )

    def pids(self) -> list[int]:
        try:
            return [int(name) for name in os.listdir(self.path("proc")) if name.isdigit()]
        except OSError:
            return []

    def fd_targets(self, pid: int) -> list[str]:
        """readlink of every fd of ``pid`` ("socket:[12345]"...); [] when gone or not allowed."""
        base = self._pid_path(pid, "fd")
        try:
            names = os.listdir(base)
        except OSError:
            return []
        targets = []
        for name in names:
            try:
                targets.append(os.readlink(os.path.join(base, name)))
            except OSError:
                continue
        return targets

    # --- cgroups ------------------------------------------------------------------------------
    def unified_cgroup_mount(self) -> Optional[str]:
        """The unified (v2) hierarchy: /sys/fs/cgroup/unified on hybrid hosts, /sys/fs/cgroup on
        v2 hosts (only v2 has cgroup.controllers), None on v1-only hosts."""
        for parts in (("sys", "fs", "cgroup", "unified"), ("sys", "fs", "cgroup")):
            if os.path.exists(self.path(*parts, "cgroup.controllers")):
                return self.path(*parts)
        return None

    def cgroup_dirs(self, mount: str, max_depth: int, limit: int) -> list[tuple[int, str]]:
        """(inode, path) of the cgroups under ``mount`` (path "/" for the mount itself), at most
        ``limit`` of them, ``max_depth`` levels deep. The inode of a cgroup v2 directory is the
        cgroup's id, as bpf_get_current_cgroup_id() gives it. Directories removed while walking
        are skipped."""
        try:
            found = [(os.stat(mount).st_ino, "/")]
        except OSError:
            return []
        level = [(mount, "")]
        for _ in range(max_depth):
            below: list[tuple[str, str]] = []
            for directory, path in level:
                try:
                    entries = list(os.scandir(directory))
                except OSError:
                    continue
                for entry in entries:
                    if len(found) >= limit:
                        return found
                    if entry.is_dir(follow_symlinks=False):
                        sub = f"{path}/{entry.name}"
                        found.append((entry.inode(), sub))
                        below.append((entry.path, sub))
            level = below
        return found

    def cgroup_id(self, mount: str, path: str) -> Optional[int]:
        """The id (directory inode) of the cgroup at ``path`` under ``mount``; None when gone."""
        try:
            return os.stat(os.path.join(mount, path.lstrip("/"))).st_ino
        except OSError:
            return None

    # --- host wide ---------------------------------------------------------------------------
    def boot_time(self) -> Optional[int]:
        if self._btime is None:
            try:
                for line in self.read_text("proc", "stat").splitlines():
                    if line.startswith("btime "):
                        self._btime = int(line.split()[1])
                        break
            except OSError:
                return None
        return self._btime

    def machine_id(self) -> str:
        for parts in (("etc", "machine-id"), ("var", "lib", "dbus", "machine-id")):
            try:
                value = self.read_text(*parts).strip()
            except OSError:
                continue
            if value:
                return value
        return ""

    def hostname(self) -> str:
        try:
            return self.read_text("proc", "sys", "kernel", "hostname").strip()
        except OSError:
            return os.uname().nodename

    def net_namespace(self, pid: Union[int, str]) -> str:
        """The network namespace of ``pid`` ("self": the agent's) as /proc/PID/ns/net names it,
        "net:[4026531840]"; "" when the process is gone or the link cannot be read."""
        try:
            return os.readlink(os.path.join(self.root, "proc", str(pid), "ns", "net"))
        except OSError:
            return ""

    def net_file(self, name: str) -> str:
        """/proc/net/<name> (tcp, tcp6): the agent's network namespace."""
        try:
            return self.read_text("proc", "net", name)
        except OSError:
            return ""
