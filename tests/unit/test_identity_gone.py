"""A pid that is gone at its first lookup is answered from memory for a while: a burst of late
calls from a process that just exited reads /proc once, not once per call (each failed read cost
~60 us on the development VM). Exec and fork events, and the TTL, keep pid reuse correct."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hostagent.identity.pid_maps import GONE_TTL_S
from hostagent.identity.procfs import ProcessInfo, ProcFS
from hostagent.identity.resource import HostInfo
from hostagent.identity.service import ServiceCache
from tests.support.clock import ManualClock

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
HOST = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
GONE = 99999  # no such directory in the fixture tree


class CountingProcFS(ProcFS):
    """The real ProcFS over a fixture tree, counting the per-process reads it is asked for."""

    def __init__(self, root: str) -> None:
        super().__init__(root, clock_ticks=100)
        self.reads = 0

    def process_info(self, pid: int) -> ProcessInfo:
        self.reads += 1
        return super().process_info(pid)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "host", root, symlinks=True)
    return root


def make(tree: Path) -> tuple[ServiceCache, CountingProcFS, ManualClock]:
    procfs, clock = CountingProcFS(str(tree)), ManualClock(1000.0)
    return ServiceCache(procfs, host_info=HOST, clock=clock), procfs, clock


def _become(tree: Path, pid: int, template: int, start: int) -> None:
    """Make ``pid`` a live process: a copy of ``template``'s files with another start time."""
    target = tree / "proc" / str(pid)
    shutil.copytree(tree / "proc" / str(template), target, symlinks=True)
    fields = (target / "stat").read_text().split(" ")
    fields[0], fields[21] = str(pid), str(start)
    (target / "stat").write_text(" ".join(fields))


def test_burst_from_a_gone_pid_reads_proc_once(tree: Path) -> None:
    cache, procfs, _clock = make(tree)
    names = {cache.service_for(GONE, "curl").name for _ in range(50)}
    resources = {id(cache.resource_for(GONE, "curl")) for _ in range(50)}
    assert names == {"unknown_service:curl"}
    assert len(resources) == 1  # the Resource is built once too
    assert procfs.reads == 1
    assert len(cache) == 0  # nothing live is cached for it
    # Another comm is another answer (one more read), and the first is still served.
    assert cache.service_for(GONE).name == "unknown_service"
    assert cache.service_for(GONE, "curl").name == "unknown_service:curl"
    assert procfs.reads == 2


def test_gone_answer_expires(tree: Path) -> None:
    cache, procfs, clock = make(tree)
    cache.service_for(GONE, "curl")
    clock.now += GONE_TTL_S + 0.01
    assert cache.service_for(GONE, "curl").name == "unknown_service:curl"
    assert procfs.reads == 2


@pytest.mark.parametrize("event", ["fork", "exec", "ttl"])
def test_pid_reused_after_a_gone_answer_is_read_afresh(tree: Path, event: str) -> None:
    cache, _procfs, clock = make(tree)
    assert cache.service_for(GONE, "nginx").name == "unknown_service:nginx"
    _become(tree, GONE, template=100, start=91000)
    if event == "fork":
        cache.on_fork(GONE, 1)
    elif event == "exec":
        cache.on_exec(GONE, "nginx")
    else:
        clock.now += GONE_TTL_S
    service = cache.service_for(GONE, "nginx")
    assert (service.name, service.start_ticks) == ("nginx", 91000)


def test_gone_forked_child_named_from_parent_once(tree: Path) -> None:
    cache, procfs, _clock = make(tree)
    parent = cache.service_for(100)
    cache.on_fork(GONE, 100)
    children = [cache.service_for(GONE, "nginx") for _ in range(20)]
    assert {c.name for c in children} == {parent.name}
    assert children[0].attributes_dict()["process.pid"] == GONE
    assert procfs.reads == 2  # the parent's, then the child's one failed read


def test_gone_answers_are_bounded(tree: Path) -> None:
    procfs = CountingProcFS(str(tree))
    cache = ServiceCache(procfs, host_info=HOST, max_exited=16)
    for pid in range(200_000, 200_100):
        cache.service_for(pid, "x")
    assert cache.pids.sizes()["gone"] == 16
