"""A process gone (or exiting) before its exec event is handled: its cgroup comes from the event's
cgroup id (the parent's cgroup when the ids match, else the unified hierarchy walked), and the
parent gives what the child certainly shares with it -- never args, owner or start time.

The fake host is a directory tree: proc/PID files as Linux writes them, and a unified cgroup
hierarchy under sys/fs/cgroup/unified whose directories' inodes play the cgroup ids (as the
inodes of cgroup2 directories do for bpf_get_current_cgroup_id())."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from hostagent.identity import cgroup_ids
from hostagent.identity.procfs import PF_EXITING, ProcessExiting, ProcFS
from hostagent.identity.resource import INSTANCE_NAMESPACE, HostInfo
from hostagent.identity.service import ServiceCache
from hostagent.model import EventKind
from hostagent.pipeline import Pipeline
from hostagent.probes import events as ev
from hostagent.settings import RuntimeSettings, SettingsHolder
from tests.support.clock import ManualClock
from tests.support.pipeline_parts import Exported, NoTracker

HOST = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
CID = "f18805fd0d82f7ccec4b979d1db70203430aaa39fb3d745e742a109bad3d2a02"
DOCKER = f"/docker/{CID}"
UNIT = "/system.slice/demo.service"
OTHER_UNIT = "/system.slice/other.service"
SHELL, CHILD = 500, 501  # the parent (a shell loop) and the exec'd client
PF_FORKNOEXEC_AND_SUPERPRIV = 0x400040  # flags of a running process, without PF_EXITING


class Host:
    """The fake host: processes and cgroups are made on demand under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.unified = root / "sys" / "fs" / "cgroup" / "unified"
        self.unified.mkdir(parents=True)
        (self.unified / "cgroup.controllers").write_text("cpu memory pids\n")
        (root / "proc").mkdir()
        (root / "proc" / "stat").write_text("btime 1700000000\n")
        self.clock = ManualClock(1000.0)
        self.procfs = ProcFS(str(root), clock_ticks=100)
        self.cache = ServiceCache(self.procfs, host_info=HOST, clock=self.clock)

    def cgroup(self, path: str) -> int:
        """Make the cgroup ``path``; its id (the directory's inode)."""
        directory = self.unified / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        return os.stat(directory).st_ino

    def process(self, pid: int, ppid: int, comm: str, exe: str, args: tuple[str, ...], cgroup: str,
                env: bytes = b"", flags: int = PF_FORKNOEXEC_AND_SUPERPRIV) -> None:  # fmt: skip
        """A proc/PID directory. cgroup: the path in name=systemd and in the unified hierarchy
        (hybrid host), as for a process systemd or a container runtime placed."""
        d = self.root / "proc" / str(pid)
        d.mkdir()
        tail = ["S", str(ppid), str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12 + ["70100"] + ["0"] * 30
        (d / "stat").write_text(f"{pid} ({comm}) {' '.join(tail)}\n")
        (d / "status").write_text(f"Name:\t{comm}\nPPid:\t{ppid}\nUid:\t0\t0\t0\t0\n")
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + (b"\0" if args else b""))
        (d / "environ").write_bytes(env)
        (d / "cgroup").write_text(f"9:name=systemd:{cgroup}\n4:memory:{cgroup}\n0::{cgroup}\n")
        if exe:
            os.symlink(exe, d / "exe")

    def shell(self, cgroup: str, env: bytes = b"") -> None:
        self.process(SHELL, 1, "bash", "/usr/bin/bash", ("bash", "loop.sh"), cgroup, env)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    made = Host(tmp_path)
    yield made
    made.cache.stop()


def attrs_of(host: Host, cgroup_id: int, forked_from: Optional[int] = SHELL) -> dict[str, object]:
    if forked_from is not None:
        host.cache.on_fork(CHILD, forked_from)
    service = host.cache.on_exec(CHILD, "curl", exe="/usr/bin/curl", cgroup_id=cgroup_id)
    assert service is not None
    # the pipeline's lookups after the exit get the same answer
    host.cache.on_exit(CHILD)
    assert host.cache.service_for(CHILD, "curl") == service
    return service.attributes_dict()


NEVER_INVENTED = ("process.command_args", "process.owner", "process.creation.time")


def test_container_process_gone_without_known_parent(host: Host) -> None:
    """docker run --network host ... redis-cli: runc, which forked it, has no socket (no fork
    event) and sits in another cgroup; the event's cgroup id names the container."""
    attrs = attrs_of(host, host.cgroup(DOCKER), forked_from=None)
    assert attrs["container.id"] == CID
    assert attrs["container.runtime.name"] == attrs["container.runtime"] == "docker"
    assert attrs["process.linux.cgroup"] == DOCKER
    assert attrs["service.instance.id"] == str(uuid.uuid5(INSTANCE_NAMESPACE, f"container:{CID}"))
    assert attrs["service.name"] == "curl"  # no Docker metadata in this test: the program
    assert attrs["process.executable.path"] == "/usr/bin/curl"
    for key in ("process.parent_pid", "hostagent.systemd.unit", *NEVER_INVENTED):
        assert key not in attrs, key


def test_child_in_its_parents_unit_takes_unit_and_inherited_service_name(host: Host) -> None:
    host.shell(UNIT, env=b"HOME=/root\0OTEL_SERVICE_NAME=nightly-sync\0OTEL_RESOURCE_ATTRIBUTES="
                        b"deployment.environment.name=prod\0SECRET=x\0")  # fmt: skip
    attrs = attrs_of(host, host.cgroup(UNIT))
    assert attrs["service.name"] == "nightly-sync"
    assert attrs["deployment.environment.name"] == "prod"
    assert attrs["hostagent.systemd.unit"] == "demo.service"
    assert attrs["hostagent.systemd.slice"] == "system.slice"
    assert attrs["process.linux.cgroup"] == UNIT
    assert attrs["process.parent_pid"] == SHELL
    assert attrs["process.pid"] == CHILD
    assert attrs["process.executable.name"] == "curl"
    for key in NEVER_INVENTED:
        assert key not in attrs, key
    assert host.cache.service_for(CHILD, "curl").decided_by == "OTEL_SERVICE_NAME"


def test_child_moved_to_another_cgroup_keeps_only_the_parent_pid(host: Host) -> None:
    """The event proves the child is not in its parent's cgroup (a runtime or systemd-run moved
    it): neither the parent's unit nor its environment is taken; the child's own cgroup is."""
    host.shell(UNIT, env=b"OTEL_SERVICE_NAME=nightly-sync\0")
    attrs = attrs_of(host, host.cgroup(OTHER_UNIT))
    assert attrs["service.name"] == "other"  # from the child's own unit, not the parent's env
    assert attrs["hostagent.systemd.unit"] == "other.service"
    assert attrs["process.parent_pid"] == SHELL


@pytest.mark.parametrize(
    ("cgroup_id", "why"),
    [
        (0, "an event without a cgroup id (v1-only host)"),
        (987654321, "a cgroup removed before the hierarchy was walked"),
    ],
)
def test_unproven_cgroup_takes_nothing_from_the_parent_but_its_pid(host: Host, cgroup_id: int, why: str) -> None:
    host.shell(UNIT, env=b"OTEL_SERVICE_NAME=nightly-sync\0")
    attrs = attrs_of(host, cgroup_id)
    assert attrs["service.name"] == "curl", why
    assert attrs["process.parent_pid"] == SHELL
    for key in ("hostagent.systemd.unit", "process.linux.cgroup", "container.id"):
        assert key not in attrs, (key, why)


def test_exiting_process_is_not_cached_from_its_emptied_proc(host: Host) -> None:
    """Past exit_mm() a process still has /proc/PID but reads as no args, no exe, no environ and
    (v1) the root cgroup. Before, that was cached as a live entry: curl without args or its
    parent's service name. Now it is gone: the parent comes from its stat, the rest as above."""
    host.shell(UNIT, env=b"OTEL_SERVICE_NAME=nightly-sync\0")
    host.process(CHILD, SHELL, "curl", "", (), "/", flags=PF_EXITING | PF_FORKNOEXEC_AND_SUPERPRIV)
    with pytest.raises(ProcessExiting) as raised:
        host.procfs.process_info(CHILD)
    assert raised.value.ppid == SHELL
    attrs = attrs_of(host, host.cgroup(UNIT), forked_from=None)  # no fork event: the shell has no socket
    assert attrs["service.name"] == "nightly-sync"
    assert attrs["process.parent_pid"] == SHELL
    assert attrs["hostagent.systemd.unit"] == "demo.service"
    assert attrs["process.executable.path"] == "/usr/bin/curl"
    assert len(host.cache) == 1  # the shell, read for its child; never the dying child


def test_running_process_is_read_as_before(host: Host) -> None:
    host.process(CHILD, SHELL, "curl", "/usr/bin/curl", ("curl", "-s", "http://127.0.0.1:8080/"), UNIT)
    service = host.cache.on_exec(CHILD, "curl", exe="/usr/bin/curl", cgroup_id=host.cgroup(UNIT))
    assert service is not None
    assert service.attributes_dict()["process.command_args"] == ("curl", "-s", "http://127.0.0.1:8080/")
    assert len(host.cache) == 1


def test_unknown_ids_walk_the_hierarchy_at_most_every_rescan_interval(host: Host) -> None:
    ids = host.cache.cgroups
    docker_id = host.cgroup(DOCKER)
    assert ids.path_of(docker_id) == DOCKER  # the first walk: on the caller's thread, answered
    assert ids.walks == 1
    assert ids.path_of(docker_id) == DOCKER and ids.walks == 1  # known: no walk
    host.clock.now += 2 * cgroup_ids.RESCAN_S
    for missing in range(10):
        assert ids.path_of(10**9 + missing) is None
    assert ids.wait_rescanned(5)
    assert ids.walks == 2  # the first unknown id asked for a walk; the others within RESCAN_S did not
    late = host.cgroup("/docker/" + "a" * 64)
    assert ids.path_of(late) is None  # made after that walk, asked too soon
    assert ids.wait_rescanned(5) and ids.walks == 2
    host.clock.now += 2 * cgroup_ids.RESCAN_S
    assert ids.path_of(late) is None  # asks for a walk, does not wait for it
    assert ids.wait_rescanned(5) and ids.walks == 3
    assert ids.path_of(late) == "/docker/" + "a" * 64  # the walk found it
    # a removed cgroup's id still resolves (ids are not reused): late events of a gone container
    shutil.rmtree(host.unified / "docker")
    host.clock.now += 2 * cgroup_ids.RESCAN_S
    assert ids.path_of(10**9) is None
    assert ids.wait_rescanned(5) and ids.walks == 4
    assert ids.path_of(docker_id) == DOCKER


class WalkRecorder(ProcFS):
    """Records the thread of each walk of the cgroup hierarchy; each walk takes ``walk_s``."""

    def __init__(self, root: str, walk_s: float = 0.0) -> None:
        super().__init__(root, clock_ticks=100)
        self.walk_s = walk_s
        self.threads: list[str] = []

    def cgroup_dirs(self, mount: str, max_depth: int, limit: int) -> list[tuple[int, str]]:
        self.threads.append(threading.current_thread().name)
        time.sleep(self.walk_s)
        return super().cgroup_dirs(mount, max_depth, limit)


def test_only_the_first_walk_runs_on_the_pipeline_thread(host: Host) -> None:
    """A walk costs ~11-14 us per cgroup (14 ms for 1027 cgroups here): the rescans for unknown
    ids run on their own thread, the first one (the cgroups made before the agent) where it is
    asked, so that an exec event in a cgroup older than the agent resolves at once."""
    procfs = WalkRecorder(str(host.root))
    ids = cgroup_ids.CgroupIds(procfs, host.clock)
    unit_id = host.cgroup(UNIT)
    try:
        assert ids.path_of(unit_id) == UNIT
        host.clock.now += 2 * cgroup_ids.RESCAN_S
        assert ids.path_of(10**9) is None
        assert ids.wait_rescanned(5)
    finally:
        ids.stop()
    assert procfs.threads == [threading.current_thread().name, "cgroup-walk"]


def test_rescans_walk_at_most_max_duty_of_the_time(host: Host) -> None:
    """Unknown ids asked for without a pause (a lost-events storm) on a host whose walk takes
    50 ms: at most MAX_DUTY of the time is spent walking, not one walk every RESCAN_S."""
    procfs = WalkRecorder(str(host.root), walk_s=0.05)
    ids = cgroup_ids.CgroupIds(procfs)  # the real clock: RESCAN_S passes as in the daemon
    host.cgroup(UNIT)
    try:
        ids.path_of(10**9)  # the first walk, here
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            ids.path_of(10**9)
            time.sleep(cgroup_ids.RESCAN_S / 5)
    finally:
        ids.stop()
    rescans = len(procfs.threads) - 1
    # 1 s at 10% of 50 ms walks: 2, perhaps 3 with the timing's slack; one per RESCAN_S would be 20
    assert 1 <= rescans <= 3, procfs.threads


def test_no_unified_hierarchy_resolves_nothing(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    cache = ServiceCache(ProcFS(str(tmp_path), clock_ticks=100), host_info=HOST)
    assert cache.cgroups.path_of(12345) is None and cache.cgroups.walks == 0
    assert cache.cgroups.id_of("0::/system.slice/demo.service\n") is None


def test_cgroup_learnt_at_mkdir_resolves_after_it_is_removed(host: Host) -> None:
    """docker run --rm ... redis-cli: the container's cgroup is made, used and removed before the
    exec event is handled. The cgroup_mkdir event (earlier in the ring) named it: no walk needed,
    and none could have found it."""
    learnt_id = 4_000_000_001  # never a directory of this tree
    host.cache.on_cgroup(learnt_id, DOCKER)
    attrs = attrs_of(host, learnt_id, forked_from=None)
    assert attrs["container.id"] == CID
    assert host.cache.cgroups.walks == 0


def test_pipeline_hands_cgroup_and_exec_events_to_identity(host: Host) -> None:
    """Ring records (struct event_hdr + payload) through the real decoder and Pipeline.on_event:
    CGROUP carries the id in ``size`` and the path as payload; EXEC its cgroup id in the header."""
    def record(kind: EventKind, pid: int, cgroup_id: int, size: int, payload: bytes, comm: bytes) -> bytes:
        h = ev.EventHdr(kind=int(kind), pid=pid, tid=pid, fd=-1, cgroup_id=cgroup_id, size=size,
                        captured_len=len(payload), comm=comm)  # fmt: skip
        return bytes(h) + payload

    pipe = Pipeline(SettingsHolder(RuntimeSettings()), NoTracker(), lambda call: None,  # type: ignore[arg-type,return-value]
                    Exported(), identity=host.cache)  # fmt: skip
    learnt_id = 4_000_000_002
    runc = 1234  # forked the container's process: in another cgroup, so only its pid is taken
    for raw in (record(EventKind.CGROUP, runc, 1, learnt_id, DOCKER.encode(), b"runc"),
                record(EventKind.EXEC, CHILD, learnt_id, runc, b"/usr/bin/curl", b"curl")):  # fmt: skip
        pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.dropped == {}
    attrs = host.cache.service_for(CHILD, "curl").attributes_dict()
    assert (attrs["container.id"], attrs["process.executable.path"]) == (CID, "/usr/bin/curl")
    assert attrs["process.parent_pid"] == runc


def test_exec_event_names_the_parent_without_a_fork_event(host: Host) -> None:
    """A shell loop's curl: the shell has no socket (no FORK event); the EXEC event's parent
    (the process group's own fork map) is enough to take its unit and service name."""
    host.shell(UNIT, env=b"OTEL_SERVICE_NAME=nightly-sync\0")
    service = host.cache.on_exec(CHILD, "curl", exe="/usr/bin/curl", cgroup_id=host.cgroup(UNIT), parent=SHELL)
    assert service is not None
    attrs = service.attributes_dict()
    assert (attrs["service.name"], attrs["process.parent_pid"]) == ("nightly-sync", SHELL)
    assert attrs["hostagent.systemd.unit"] == "demo.service"


def test_parent_that_moved_itself_after_its_exec_is_read_again(host: Host) -> None:
    """``sh -c 'echo $$ > .../cgroup.procs; curl ...'``: the shell was cached at its exec, in the
    root cgroup; it is read again (it is alive) before its child is judged not in its cgroup."""
    host.shell("/", env=b"OTEL_SERVICE_NAME=nightly-sync\0")
    assert host.cache.on_exec(SHELL, "sh", exe="/usr/bin/sh") is not None  # cached in "/"
    (host.root / "proc" / str(SHELL) / "cgroup").write_text(f"9:name=systemd:{UNIT}\n0::{UNIT}\n")
    attrs = attrs_of(host, host.cgroup(UNIT))
    assert (attrs["service.name"], attrs["hostagent.systemd.unit"]) == ("nightly-sync", "demo.service")
    assert host.cache.service_for(SHELL).attributes_dict()["process.linux.cgroup"] == UNIT


def test_exited_parent_is_never_read_again(host: Host) -> None:
    """Its pid may be another process's by now: what was known of it stands."""
    host.shell("/", env=b"OTEL_SERVICE_NAME=nightly-sync\0")
    host.cache.on_exec(SHELL, "sh", exe="/usr/bin/sh")
    host.cache.on_exit(SHELL)
    shutil.rmtree(host.root / "proc" / str(SHELL))
    host.process(SHELL, 1, "other", "/usr/bin/other", ("other",), UNIT, env=b"OTEL_SERVICE_NAME=impostor\0")
    attrs = attrs_of(host, host.cgroup(UNIT))
    assert attrs["service.name"] == "demo"  # the child's own unit; neither shell's environment
    assert attrs["process.parent_pid"] == SHELL


@pytest.mark.parametrize(
    ("cgroup", "name", "want"),
    [
        (DOCKER, "unknown_service:curl", {"container.id": CID, "container.runtime.name": "docker"}),
        (UNIT, "demo", {"hostagent.systemd.unit": "demo.service"}),  # the unit names it, as any of its processes
        (None, "unknown_service:curl", {}),  # a connection without a cgroup id
    ],
)
def test_never_seen_gone_pid_is_placed_by_its_connections_cgroup(host: Host, cgroup: Optional[str], name: str,
                                                                 want: dict[str, object]) -> None:  # fmt: skip
    """Its exec event lost (ring full) or before the agent started: the connection's first event
    still carried the cgroup id. The comm is a thread's: never a program name, never a parent."""
    cgroup_id = host.cgroup(cgroup) if cgroup else 0
    service = host.cache.service_for(CHILD, "curl", cgroup_id)
    attrs = service.attributes_dict()
    assert (service.name, attrs["service.name"]) == (name, name)
    assert {k: attrs[k] for k in want} == want
    for key in ("process.parent_pid", "process.executable.path", *NEVER_INVENTED):
        assert key not in attrs, key
    assert host.cache.resource_for(CHILD, "curl", cgroup_id).attributes["service.name"] == name
    assert len(host.cache) == 0


@pytest.mark.parametrize(
    ("exe", "parent_known", "path", "name"),
    [
        # busybox's sh runs an applet (wget in `sh -c 'wget ...'`) by exec'ing /proc/self/exe:
        # the link is the forked shell's program, its parent's
        ("/proc/self/exe", True, "/bin/busybox", "busybox"),
        ("/proc/thread-self/exe", True, "/bin/busybox", "busybox"),
        (f"/proc/{CHILD}/exe", True, "/bin/busybox", "busybox"),
        (f"/proc/{SHELL}/exe", True, "/bin/busybox", "busybox"),
        # another process's link, or no parent to say what self was: no program, the comm names it
        ("/proc/1/exe", True, None, "exe"),
        ("/proc/self/exe", False, None, "exe"),
        # an ordinary path is the program
        ("/bin/wget", True, "/bin/wget", "wget"),
    ],
)
def test_reexec_of_own_program_gone(host: Host, exe: str, parent_known: bool, path: Optional[str],
                                    name: str) -> None:  # fmt: skip
    """Seen live in a container (`docker run ... busybox sh -c 'wget ...'`): the gone wget's
    process.executable.path was "/proc/self/exe" and its name "exe"."""
    host.process(SHELL, 1, "sh", "/bin/busybox", ("sh", "-c", "wget -q http://127.0.0.1/"), DOCKER)
    if parent_known:
        host.cache.on_fork(CHILD, SHELL)
    # comm is the exec'd file name's basename, as the kernel sets it
    service = host.cache.on_exec(CHILD, "exe", exe=exe, cgroup_id=host.cgroup(DOCKER))
    assert service is not None
    attrs = service.attributes_dict()
    assert attrs.get("process.executable.path") == path
    assert attrs["process.executable.name"] == name
    assert attrs["service.name"] == name  # no Docker metadata here: the program names it
