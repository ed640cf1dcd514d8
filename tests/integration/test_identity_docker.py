"""Identity against the real Docker engine: container attributes, Compose names, renames via the
event stream, listeners of host-network containers, and Docker being absent."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hostagent.identity.docker import DockerClient, DockerMetadata
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.peers import PeerResolver
from hostagent.identity.procfs import ProcFS
from hostagent.identity.service import ServiceCache
from tests.support.docker_engine import DockerEngine, docker_engine  # noqa: F401  (fixture)
from tests.support.ports import free_port

pytestmark = [pytest.mark.root, pytest.mark.docker]

WEB1, WEB2, WEB2_RENAMED = "hostagent-id-web1", "hostagent-id-web2", "hostagent-id-web2-renamed"
PORT1, PORT2 = free_port(), free_port()


@dataclass
class Web:
    name: str
    id: str
    pid: int
    port: int


@pytest.fixture(scope="module")
def webs(docker_engine: DockerEngine) -> Iterator[tuple[Web, Web]]:  # noqa: F811
    image = docker_engine.ensure_busybox_image()
    docker_engine.remove(WEB1, WEB2, WEB2_RENAMED)
    docker_engine.cli(
        "run", "-d", "--network", "host", "--name", WEB1,
        "--label", "com.docker.compose.service=checkout", "--label", "com.docker.compose.project=shop",
        image, "httpd", "-f", "-p", f"127.0.0.1:{PORT1}", "-h", "/",
    )  # fmt: skip
    docker_engine.cli(
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        WEB2,
        image,
        "httpd",
        "-f",
        "-p",
        f"127.0.0.1:{PORT2}",
        "-h",
        "/",
    )
    try:
        webs = tuple(
            Web(name, docker_engine.container_id(name), docker_engine.container_pid(name), port)
            for name, port in ((WEB1, PORT1), (WEB2, PORT2))
        )
        for web in webs:  # both really serve HTTP on loopback
            deadline = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/", timeout=2):
                        break
                except urllib.error.HTTPError:
                    break  # an HTTP answer (busybox httpd lists no directories: 404) is enough
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield webs  # type: ignore[misc]
    finally:
        docker_engine.remove(WEB1, WEB2, WEB2_RENAMED)


@pytest.fixture
def metadata() -> Iterator[DockerMetadata]:
    docker = DockerMetadata(DockerClient())
    docker.start()
    assert docker.connected.wait(10), "event stream did not connect"
    yield docker
    docker.stop()


def test_compose_labelled_container(webs: tuple[Web, Web], metadata: DockerMetadata) -> None:
    web1, _ = webs
    service = ServiceCache(ProcFS("/"), metadata).service_for(web1.pid)
    attrs = service.attributes_dict()
    assert (service.name, service.namespace, service.decided_by) == ("checkout", "shop", "compose")
    assert attrs["container.id"] == web1.id
    assert attrs["container.name"] == WEB1
    assert attrs["container.image.name"] == "hostagent-bb"
    assert attrs["container.image.tags"] == ("latest",)
    assert attrs["container.runtime.name"] == "docker"
    assert attrs["process.executable.path"] == "/bin/busybox"
    assert attrs["process.command_args"] == ("httpd", "-f", "-p", f"127.0.0.1:{PORT1}", "-h", "/")


def test_unlabelled_container_is_named_by_container_name(
    webs: tuple[Web, Web], metadata: DockerMetadata
) -> None:
    _, web2 = webs
    service = ServiceCache(ProcFS("/"), metadata).service_for(web2.pid)
    assert (service.name, service.namespace, service.decided_by) == (WEB2, None, "container_name")
    assert service.attributes_dict()["container.id"] == web2.id


def test_rename_reaches_the_cache_through_the_event_stream(
    webs: tuple[Web, Web],
    metadata: DockerMetadata,
    docker_engine: DockerEngine,  # noqa: F811
) -> None:
    _, web2 = webs
    cache = ServiceCache(ProcFS("/"), metadata)
    assert cache.service_for(web2.pid).attributes_dict()["container.name"] == WEB2
    docker_engine.cli("rename", WEB2, WEB2_RENAMED)
    try:
        renamed_at = time.monotonic()
        while cache.service_for(web2.pid).attributes_dict()["container.name"] != WEB2_RENAMED:
            assert time.monotonic() - renamed_at < 2.0, "rename not seen within 2 s"
            time.sleep(0.01)
        assert cache.service_for(web2.pid).name == WEB2_RENAMED
    finally:
        docker_engine.cli("rename", WEB2_RENAMED, WEB2)


def test_peer_service_of_a_host_network_container(webs: tuple[Web, Web], metadata: DockerMetadata) -> None:
    web1, web2 = webs
    cache = ServiceCache(ProcFS("/"), metadata)
    assert web2.pid != web1.pid
    listeners = ListenerMap(ProcFS("/"), on_new_pid=cache.service_for)
    listeners.refresh()  # what the background thread does; warms the listeners' services
    assert listeners.pid_for("127.0.0.1", PORT1) == web1.pid
    peers = PeerResolver(listeners, cache.peek)
    assert peers.attributes_for("127.0.0.1", PORT1) == {
        "service.peer.name": "checkout",
        "peer.service": "checkout",
        "service.peer.namespace": "shop",
    }
    assert peers.attributes_for("127.0.0.1", PORT2)["service.peer.name"] == WEB2


def test_docker_absent_degrades_to_cgroup_facts(webs: tuple[Web, Web], tmp_path: object) -> None:
    """No engine on the socket: no exception, container.id from the cgroup, name from the
    program; the event thread keeps retrying quietly."""
    web1, _ = webs
    docker = DockerMetadata(DockerClient(f"{tmp_path}/absent.sock"), backoff_initial=0.05)
    docker.start()
    try:
        service = ServiceCache(ProcFS("/"), docker).service_for(web1.pid)
        attrs = service.attributes_dict()
        assert (service.name, service.decided_by) == ("httpd", "executable")
        assert attrs["container.id"] == web1.id
        assert "container.name" not in attrs
        assert not docker.connected.is_set()
    finally:
        docker.stop()
