"""ServiceCache over fixture /proc trees: attributes, caching, exec/exit, pid reuse, bounds,
Docker events (captured from the real engine) and listeners."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource

import hostagent
from hostagent.identity.docker import DockerMetadata
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.naming import parse_service_rules
from hostagent.identity.peers import PeerResolver
from hostagent.identity.proc_net import parse_listening
from hostagent.identity.procfs import ProcFS, parse_environ, parse_stat
from hostagent.identity.resource import INSTANCE_NAMESPACE, HostInfo
from hostagent.identity.service import ServiceCache
from hostagent.model import Call, Connection, Role
from tests.support.docker_engine import ReplayDockerClient

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
HOST = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
CHECKOUT = "4f6d7ce1c12c1c247c8e3c5605ebdb02f9122851a9bb38c54a4264654e882ebf"
PLAIN = "e897fddf0a64fa0163c10df75e0ec6c0546b7c4e0b10c151b9398df619a720dd"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A private copy of the host tree, so tests can make processes exit, exec and reuse pids."""
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "host", root, symlinks=True)
    return root


def make_cache(root: Path, **kwargs) -> tuple[ServiceCache, ReplayDockerClient]:  # type: ignore[no-untyped-def]
    client = ReplayDockerClient(str(FIXTURES / "docker"))
    cache = ServiceCache(ProcFS(str(root), clock_ticks=100), DockerMetadata(client), host_info=HOST, **kwargs)
    return cache, client


def test_systemd_service_attributes(tree: Path) -> None:
    cache, _ = make_cache(tree)
    service = cache.service_for(100)
    start = 70100  # starttime field of proc/100/stat; btime 1795561823; CLK_TCK 100
    assert service.attributes_dict() == {
        "host.name": "fixture-host",
        "host.id": "0123456789abcdef0123456789abcdef",
        "host.arch": "amd64",
        "os.type": "linux",
        "telemetry.sdk.name": "hostagent",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": hostagent.__version__,
        "service.name": "nginx",
        "service.instance.id": str(uuid.uuid5(INSTANCE_NAMESPACE, f"{HOST.id}:100:{start}")),
        "process.pid": 100,
        "process.parent_pid": 1,
        "process.creation.time": "2026-11-24T23:22:04.000+00:00",  # 1795561823 + 701.00 s
        "process.executable.name": "nginx",
        "process.executable.path": "/usr/sbin/nginx",
        "process.command_args": ("nginx: master process /usr/sbin/nginx -g daemon on; master_process on;",),
        "process.owner": "root",
        "process.linux.cgroup": "/system.slice/nginx.service",
        "hostagent.systemd.unit": "nginx.service",
        "hostagent.systemd.slice": "system.slice",
    }
    assert service.decided_by == "systemd_unit"


def test_container_attributes_from_real_engine_answers(tree: Path) -> None:
    cache, _ = make_cache(tree)
    attrs = cache.service_for(14938).attributes_dict()
    assert attrs["service.name"] == "checkout"
    assert attrs["service.namespace"] == "shop"
    assert attrs["container.id"] == CHECKOUT
    assert attrs["container.name"] == "hostagent-id-checkout"
    assert attrs["container.image.name"] == "hostagent-bb"
    assert attrs["container.image.tags"] == ("latest",)
    assert attrs["container.runtime.name"] == "docker"
    assert attrs["container.runtime"] == "docker"
    # The instance is the container: uuid5 over its id, whatever the pid.
    assert attrs["service.instance.id"] == str(uuid.uuid5(INSTANCE_NAMESPACE, f"container:{CHECKOUT}"))
    assert attrs["deployment.environment.name"] == "prod"  # from the app's OTEL_RESOURCE_ATTRIBUTES
    assert "hostagent.systemd.unit" not in attrs


def test_otel_resource_attributes_merge_but_agent_facts_win(tree: Path) -> None:
    cache, _ = make_cache(tree)
    attrs = cache.service_for(102).attributes_dict()
    assert (attrs["service.name"], attrs["service.namespace"], attrs["service.version"]) == (
        "billing",
        "fin ops",
        "2.1",
    )
    assert attrs["process.runtime.name"] == "cpython"


def test_lookup_is_cached_and_resource_built_once(tree: Path) -> None:
    cache, client = make_cache(tree)
    first = cache.service_for(106)
    requests = len(client.requests)
    shutil.rmtree(tree / "proc" / "106")  # a hit must not touch /proc any more
    assert cache.service_for(106) is first
    resource = cache.resource_for(106)
    assert isinstance(resource, Resource)
    assert cache.resource_for(106) is resource
    assert dict(resource.attributes) == first.attributes_dict()
    # Resource(attrs), not Resource.create(), which would say the SDK is "opentelemetry"
    assert resource.attributes["telemetry.sdk.name"] == "hostagent"
    assert len(client.requests) == requests
    assert cache.misses == 1


def test_config_rule_in_cache(tree: Path) -> None:
    rules = parse_service_rules([{"name": "legacy-billing", "exe": "/opt/legacy/*"}], "c.toml")
    cache = ServiceCache(ProcFS(str(tree), clock_ticks=100), None, rules, host_info=HOST)
    assert (cache.service_for(120).name, cache.service_for(120).decided_by) == ("legacy-billing", "config")


def _become(tree: Path, pid: int, template: int, start: int) -> None:
    """Make ``pid`` a new process: a copy of ``template``'s files with another start time."""
    target = tree / "proc" / str(pid)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(tree / "proc" / str(template), target, symlinks=True)
    fields = (target / "stat").read_text().split(" ")
    fields[0] = str(pid)
    fields[21] = str(start)
    (target / "stat").write_text(" ".join(fields))


def test_pid_reuse_after_exit_never_carries_the_old_name(tree: Path) -> None:
    cache, _ = make_cache(tree)
    assert cache.service_for(101).name == "orders"
    shutil.rmtree(tree / "proc" / "101")
    cache.on_exit(101)
    # Late calls of the dead process (still in the pipeline) keep its name...
    assert cache.service_for(101).name == "orders"
    # ...until a new process has the pid: then it is read afresh.
    _become(tree, 101, template=100, start=90000)
    service = cache.service_for(101)
    assert (service.name, service.start_ticks) == ("nginx", 90000)


def test_exec_recomputes_even_without_exit(tree: Path) -> None:
    cache, _ = make_cache(tree)
    assert cache.service_for(104).name == "manage.py"
    _become(tree, 104, template=113, start=70104)  # same process execs gunicorn
    assert cache.service_for(104).name == "manage.py"  # cached until told
    assert cache.on_exec(104) is not None
    assert cache.service_for(104).name == "gunicorn"


def test_short_lived_process_named_at_exec(tree: Path) -> None:
    cache, _ = make_cache(tree)
    cache.on_exec(112)
    shutil.rmtree(tree / "proc" / "112")  # exits before its first call reaches identity
    cache.on_exit(112)
    assert cache.service_for(112).name == "http.server"


def test_resource_of_a_call_is_its_process_never_the_agent(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every span's Resource (SpanBuilder's resource_for): the calling process's, built once; the
    agent's own OTEL_* environment never leaks into it."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "the-agent")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=agent")
    cache, _ = make_cache(tree)
    nginx = Call(protocol="http", role=Role.SERVER, start_ns=0, end_ns=1, name="GET",
                 conn=Connection(pid=100, tid=100, fd=3, comm="nginx"))  # fmt: skip
    resource = cache.resource_of(nginx)
    assert resource is cache.resource_for(100) and hash(resource) == hash(Resource(dict(resource.attributes)))
    assert dict(resource.attributes) == cache.service_for(100).attributes_dict()
    assert (resource.attributes["service.name"], "deployment.environment" in resource.attributes) == ("nginx", False)
    no_process = Call(protocol="dns", role=Role.CLIENT, start_ns=0, end_ns=1, name="x")
    assert cache.resource_of(no_process).attributes["service.name"] == "unknown_service"


def test_unknown_process_uses_comm(tree: Path) -> None:
    cache, _ = make_cache(tree)
    service = cache.service_for(99999, comm="curl")
    assert (service.name, service.decided_by) == ("unknown_service:curl", "unknown")
    assert cache.service_for(99999).name == "unknown_service"
    assert len(cache) == 0  # never cached: the pid may appear later


def test_truncated_proc_files_never_raise(tree: Path) -> None:
    """An exit race can leave /proc files empty; the lookup answers, it does not raise."""
    cache, _ = make_cache(tree)
    (tree / "proc" / "105" / "stat").write_text("")
    assert cache.service_for(105, comm="sleep").name == "unknown_service:sleep"
    assert cache.on_exec(105) is None


def test_sweep_drops_gone_and_reused(tree: Path) -> None:
    cache, _ = make_cache(tree)
    for pid in (100, 101, 102):
        cache.service_for(pid)
    shutil.rmtree(tree / "proc" / "100")
    _become(tree, 101, template=102, start=12345)  # exit event lost, pid reused
    assert cache.sweep() == 2
    assert len(cache) == 1
    assert cache.service_for(101).name == "billing"


def test_cache_is_bounded_lru(tree: Path) -> None:
    cache, _ = make_cache(tree, max_entries=3)
    for pid in (100, 101, 102):
        cache.service_for(pid)
    cache.service_for(100)  # touch: 101 is now the oldest
    cache.service_for(103)
    assert len(cache) == 3
    assert cache.evictions == 1
    assert cache.peek(101) is None
    assert cache.peek(100) is not None


def test_rename_event_captured_from_engine_renames_service(tree: Path) -> None:
    cache, client = make_cache(tree)
    assert cache.service_for(107).attributes_dict()["container.name"] == "hostagent-id-plain"
    event = json.loads((FIXTURES / "docker" / "events.jsonl").read_text().splitlines()[0])
    assert event["Action"] == "rename"
    client.renamed[PLAIN] = event["Actor"]["Attributes"]["name"]
    assert cache.docker is not None
    cache.docker.handle_event(event)
    service = cache.service_for(107)
    assert (service.name, service.attributes_dict()["container.name"]) == ("hostagent-id-plain2",) * 2


def test_destroy_event_drops_container_metadata(tree: Path) -> None:
    cache, client = make_cache(tree)
    assert cache.docker is not None
    cache.service_for(107)
    events = [json.loads(line) for line in (FIXTURES / "docker" / "events.jsonl").read_text().splitlines()]
    assert [e["Action"] for e in events] == ["rename", "start", "die", "destroy", "rename"]
    requests = len(client.requests)
    cache.docker.get(PLAIN)
    assert len(client.requests) == requests  # cached
    cache.docker.handle_event({**events[3], "Actor": {"ID": PLAIN}})
    # The entry was dropped, and the cache recomputed the container's (here still present)
    # process, which had to inspect again.
    assert client.requests[requests:] == [f"/containers/{PLAIN}/json"]


def test_docker_down_then_back(tree: Path) -> None:
    client = ReplayDockerClient(str(FIXTURES / "docker"), available=False)
    metadata = DockerMetadata(client)
    cache = ServiceCache(ProcFS(str(tree), clock_ticks=100), metadata, host_info=HOST)
    down = cache.service_for(107)
    assert (down.name, down.attributes_dict()["container.id"]) == ("sleep", PLAIN)
    client.available = True
    cache.on_container_change(None)  # what the event thread says after reconnecting
    assert cache.service_for(107).name == "hostagent-id-plain"


def test_go_runtime_detected_from_elf_sections(tmp_path: Path) -> None:
    """dockerd (a Go program, installed here) vs a C program."""
    from hostagent.identity.interpreters import go_binary

    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("no Go binary installed")
    assert go_binary(dockerd) is True
    assert go_binary("/bin/busybox") is False
    assert go_binary(str(tmp_path / "missing")) is False


# --- procfs parsing ---------------------------------------------------------------------------


def test_parse_stat_with_hostile_comm() -> None:
    line = "4242 (a) b (c) S 17 4242 4242 0 -1 4194560 1 0 0 0 2 0 0 0 20 0 1 0 71402 2322432 348 0\n"
    assert parse_stat(line) == (17, 71402)


def test_parse_environ_keeps_only_identity_keys() -> None:
    raw = b"PATH=/bin\0OTEL_SERVICE_NAME=orders\0DB_PASSWORD=hunter2\0OTEL_RESOURCE_ATTRIBUTES=a=b\0"
    assert parse_environ(raw) == {"OTEL_SERVICE_NAME": "orders", "OTEL_RESOURCE_ATTRIBUTES": "a=b"}


def test_host_info_from_fixture() -> None:
    host = HostInfo.from_procfs(ProcFS(str(FIXTURES / "host")))
    assert (host.name, host.id) == ("fixture-host", "0123456789abcdef0123456789abcdef")


# --- listeners --------------------------------------------------------------------------------


def test_parse_listening_real_proc_net_tcp() -> None:
    """/proc/net/tcp{,6} captured here with listeners on 127.0.0.1:18401, [::]:18402,
    0.0.0.0:18403, [::1]:18404 and an established client socket (not a listener)."""
    root = FIXTURES / "listeners" / "proc" / "net"
    v4 = parse_listening((root / "tcp").read_text())
    v6 = parse_listening((root / "tcp6").read_text())
    assert v4[20061] == ("127.0.0.1", 18401)
    assert v4[20063] == ("0.0.0.0", 18403)
    assert v6 == {20062: ("::", 18402), 20064: ("::1", 18404)}
    assert 20065 not in v4  # the connected client


def test_only_a_loopback_miss_asks_for_a_refresh_and_once_per_period() -> None:
    """A remote peer can never be a local listener: its miss must not make the thread re-read
    the listeners (every client call of a host that calls other hosts would)."""
    listeners = ListenerMap(ProcFS(str(FIXTURES / "listeners")), min_gap=0.0)
    listeners.refresh()
    assert listeners.pid_for("10.1.2.3", 443) is None and not listeners._wake.is_set()
    assert listeners.pid_for("2001:db8::1", 443) is None and not listeners._wake.is_set()
    assert listeners.pid_for("127.0.0.1", 18499) is None and listeners._wake.is_set()  # a new server?
    listeners._wake.clear()
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 18499) is None and not listeners._wake.is_set()  # asked already
    assert listeners.pid_for("::1", 18498) is None and listeners._wake.is_set()  # another endpoint


def test_listener_map_and_peer_resolver(tree: Path) -> None:
    procfs = ProcFS(str(FIXTURES / "listeners"))
    warmed: list[int] = []
    listeners = ListenerMap(procfs, min_gap=0.0, on_new_pid=warmed.append)
    assert listeners.pid_for("127.0.0.1", 18401) is None  # nothing before the first refresh
    listeners.refresh()
    assert warmed == [4242]
    assert listeners.pid_for("127.0.0.1", 18401) == 4242
    assert listeners.pid_for("::ffff:127.0.0.1", 18401) == 4242
    assert listeners.pid_for("127.0.0.1", 18402) == 4242  # [::] wildcard, loopback peer
    assert listeners.pid_for("127.0.0.5", 18403) == 4242  # 0.0.0.0 wildcard
    assert listeners.pid_for("10.1.2.3", 18403) is None  # another host's port 18403
    assert listeners.pid_for("::1", 18404) == 4242
    assert listeners.pid_for("127.0.0.1", 18499) is None

    cache, _ = make_cache(tree)
    os.symlink(tree / "proc" / "100", tree / "proc" / "4242")  # pid 4242 is "nginx" here
    peers = PeerResolver(listeners, cache.peek)
    assert peers.attributes_for("127.0.0.1", 18401) == {}  # not cached yet: no /proc read here
    cache.service_for(4242)
    assert peers.attributes_for("127.0.0.1", 18401) == {"service.peer.name": "nginx", "peer.service": "nginx"}
    assert peers.attributes_for("127.0.0.1", 18401, self_pid=4242) == {}  # talking to itself
