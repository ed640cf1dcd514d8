"""A forked child that is gone before its first call is named from its parent (fork events)."""

from __future__ import annotations

import shutil
from pathlib import Path

from hostagent.identity.procfs import ProcFS
from hostagent.identity.resource import HostInfo
from hostagent.identity.service import ServiceCache

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
HOST = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
GONE = 99999  # no such directory in the fixture tree


def cache(tmp_path: Path) -> ServiceCache:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "host", root, symlinks=True)
    return ServiceCache(ProcFS(str(root), clock_ticks=100), host_info=HOST)


def test_gone_child_takes_the_parents_service_with_its_own_ids(tmp_path: Path) -> None:
    c = cache(tmp_path)
    parent = c.service_for(100)
    c.on_fork(GONE, 100)
    child = c.service_for(GONE, "postgres")
    attrs = child.attributes_dict()
    assert child.name == parent.name and child.namespace == parent.namespace
    assert attrs["process.pid"] == GONE
    assert attrs["process.parent_pid"] == 100
    assert "process.creation.time" not in attrs
    assert attrs["service.instance.id"] == parent.attributes_dict()["service.instance.id"]
    assert {k: v for k, v in attrs.items() if not k.startswith("process.")} == {
        k: v for k, v in parent.attributes_dict().items() if not k.startswith("process.")}


def test_without_a_fork_event_a_gone_process_stays_unknown(tmp_path: Path) -> None:
    c = cache(tmp_path)
    c.service_for(100)
    assert c.service_for(GONE, "postgres").name == "unknown_service:postgres"


def test_fork_memory_is_bounded(tmp_path: Path) -> None:
    c = cache(tmp_path)
    for child in range(200_000, 200_000 + 5000):
        c.on_fork(child, 100)
    assert c.pids.sizes()["forked"] == c.pids.max_exited
