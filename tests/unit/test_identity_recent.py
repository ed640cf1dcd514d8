"""ServiceCache's lock-free fast path (``PidMaps.recent``, read by ``service_for``, ``resource_for``
and the pipeline): a pid looked up since the live map last changed is answered without the lock,
and never with an entry the uncached lookup would not give for the same order of events (exec,
exit, pid reuse, a late Docker answer, a lost exit found by the sweep, LRU eviction)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.identity.service import ServiceCache
from hostagent.model import Call, Connection, Role
from hostagent.pipeline import Pipeline
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.pipeline_parts import Exported, NoTracker
from tests.unit.test_identity_service import FIXTURES, PLAIN, _become, make_cache


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "host", root, symlinks=True)
    return root


def _looked_up(cache: ServiceCache, pid: int) -> str:
    """Two lookups: the first reads /proc, the second is a hit (and puts the pid in ``recent``)."""
    cache.service_for(pid)
    name = cache.service_for(pid).name
    assert pid in cache.recent
    return str(name)


def test_a_recent_pid_is_answered_without_the_lock(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, _ = make_cache(tree)
    service = cache.service_for(101)
    resource = cache.resource_for(101)  # a hit: 101 is recent from here on

    def no_lock(pid: int) -> Any:
        raise AssertionError("the locked lookup was used")

    monkeypatch.setattr(cache.pids, "hit", no_lock)
    assert cache.service_for(101) is service
    assert cache.resource_for(101) is resource
    conn = Connection(pid=101, tid=101, fd=3, comm="x")
    assert cache.resource_of(Call(protocol="http", role=Role.SERVER, start_ns=0, end_ns=1, name="GET", conn=conn)) \
        is resource


def test_exit_then_pid_reuse_is_read_afresh(tree: Path) -> None:
    cache, _ = make_cache(tree)
    assert _looked_up(cache, 101) == "orders"
    shutil.rmtree(tree / "proc" / "101")
    cache.on_exit(101)
    assert 101 not in cache.recent
    _become(tree, 101, template=100, start=90000)
    assert (cache.service_for(101).name, cache.service_for(101).start_ticks) == ("nginx", 90000)


def test_exec_of_a_process_already_gone_is_not_answered_from_before(tree: Path) -> None:
    """The exec event names the new program (the process is gone: nothing is put in the live
    map); the pid's earlier entry must not be answered from ``recent``."""
    cache, _ = make_cache(tree)
    assert _looked_up(cache, 104) == "manage.py"
    shutil.rmtree(tree / "proc" / "104")
    cache.on_exec(104, comm="curl", exe="/usr/bin/curl")
    assert cache.service_for(104, "curl").name == "curl"
    assert cache.resource_for(104, "curl").attributes["service.name"] == "curl"


def test_exec_of_a_live_process(tree: Path) -> None:
    cache, _ = make_cache(tree)
    assert _looked_up(cache, 104) == "manage.py"
    _become(tree, 104, template=113, start=70104)
    cache.on_exec(104)
    assert cache.service_for(104).name == "gunicorn"
    assert cache.resource_for(104).attributes["service.name"] == "gunicorn"


def test_a_late_docker_rename_renames_a_recent_pid(tree: Path) -> None:
    cache, client = make_cache(tree)
    assert _looked_up(cache, 107) == "hostagent-id-plain"
    event = json.loads((FIXTURES / "docker" / "events.jsonl").read_text().splitlines()[0])
    client.renamed[PLAIN] = event["Actor"]["Attributes"]["name"]
    assert cache.docker is not None
    cache.docker.handle_event(event)
    assert cache.service_for(107).name == "hostagent-id-plain2"
    assert cache.resource_for(107).attributes["service.name"] == "hostagent-id-plain2"


def test_the_sweep_finds_a_lost_exit_and_a_reused_pid(tree: Path) -> None:
    cache, _ = make_cache(tree)
    assert _looked_up(cache, 101) == "orders"
    _become(tree, 101, template=102, start=12345)  # exit event lost, pid reused
    assert cache.sweep() == 1
    assert cache.service_for(101).name == "billing"


def test_an_evicted_pid_is_read_again(tree: Path) -> None:
    cache, _ = make_cache(tree, max_entries=2)
    assert _looked_up(cache, 100) == "nginx"
    cache.service_for(101)
    cache.service_for(102)  # the bound evicts 100
    assert cache.evictions == 1 and cache.peek(100) is None and 100 not in cache.recent
    shutil.rmtree(tree / "proc" / "100")  # gone meanwhile: answered as a gone pid, not as before
    assert cache.service_for(100, "nginx").name == "unknown_service:nginx"


def test_the_pipeline_reads_recent_and_sees_each_change(tree: Path) -> None:
    """The pipeline's own read of ``recent`` (compiled: no call) against exit + pid reuse and exec:
    the service RED metrics get and the span's Resource are the new process's."""
    cache, _ = make_cache(tree)
    seen: list[Any] = []
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=cache.resource_of)
    exported = Exported()
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http"}))), NoTracker(), builder.build,
                    exported, identity=cache, metrics=lambda c, s: seen.append(s))

    def call_of(pid: int) -> Call:
        return Call(protocol="http", role=Role.SERVER, start_ns=0, end_ns=1, name="GET",
                    conn=Connection(pid=pid, tid=pid, fd=3, comm="x"))

    def service_of_last_span() -> Any:
        resource: Resource = exported.spans[-1].resource
        return resource.attributes["service.name"]

    for _ in range(2):
        pipe.on_call(call_of(101))
    assert 101 in cache.recent and seen == ["orders", "orders"] and service_of_last_span() == "orders"
    shutil.rmtree(tree / "proc" / "101")
    cache.on_exit(101)
    _become(tree, 101, template=100, start=90000)
    pipe.on_call(call_of(101))
    assert (seen[-1], service_of_last_span()) == ("nginx", "nginx")
    pipe.on_call(call_of(101))  # from recent now
    _become(tree, 101, template=113, start=90000)
    cache.on_exec(101)
    pipe.on_call(call_of(101))
    assert seen[-2:] == ["nginx", "gunicorn"] and service_of_last_span() == "gunicorn"


def test_redacted_resources_read_recent_entries_as_resource_of_does(tree: Path) -> None:
    """``RedactedResources(cache.resource_of, ..., recent=cache.recent)`` (assembly's wiring) gives
    what ``resource_of`` gives: the recent entry's built Resource without the call, and through
    the call for a pid not recent or whose Resource is not built yet; an exit is seen at once."""
    from hostagent.policy.redaction import PiiCounters
    from hostagent.policy.resource_redaction import RedactedResources

    cache, _ = make_cache(tree)
    asked: list[int] = []

    def resource_of(call: Call) -> Resource:
        asked.append(call.conn.pid if call.conn is not None else 0)
        return cache.resource_of(call)

    resources = RedactedResources(resource_of, SettingsHolder(RuntimeSettings()), b"k" * 32, PiiCounters(),
                                  recent=cache.recent)

    def of(pid: int) -> Call:
        return Call(protocol="http", role=Role.SERVER, start_ns=0, end_ns=1, name="GET",
                    conn=Connection(pid=pid, tid=pid, fd=3, comm="x"))

    cache.service_for(101)
    cache.service_for(101)  # recent from here on, its Resource not built yet
    first = resources(of(101))
    assert asked == [101] and first.attributes == cache.resource_of(of(101)).attributes
    assert resources(of(101)) is first and asked == [101]  # built: read from the entry
    resources(of(100))
    assert asked == [101, 100]  # not recent: through the call
    cache.on_exit(101)
    shutil.rmtree(tree / "proc" / "101")
    _become(tree, 101, template=100, start=90000)
    assert resources(of(101)).attributes["service.name"] == "nginx" and asked[-1] == 101
