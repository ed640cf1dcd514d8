"""A server that starts listening after the agent is the peer of its very first client call.

Acceptance run: ``python -m http.server`` started, then three curls 0.7 s apart: the first client
span had no ``service.peer.name``, the next two had it. The listener table learnt the new server
only on the first call's miss, from a /proc scan on its thread, after that span was built. The
kernel's LISTEN event (bpf/capture.c on_listen) now teaches the table, and the pipeline reads the
listener's Service, before any call to the server is handled.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from hostagent.identity.docker import DockerMetadata
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.procfs import ProcFS
from hostagent.identity.service import ServiceCache
from hostagent.model import Call, Connection, Endpoint, EventKind, Role
from hostagent.pipeline import Pipeline
from hostagent.probes import events as ev
from tests.support.docker_engine import ReplayDockerClient
from tests.support.pipeline_parts import Exported, event_fed_pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"
NGINX = 100  # tests/fixtures/proc/host: pid 100 is nginx (nginx.service)
NGINX_PEER = {"service.peer.name": "nginx", "peer.service": "nginx"}
V4, V6 = socket.AF_INET, socket.AF_INET6


def listen_record(family: int, address: str, port: int, pid: int = NGINX) -> bytes:
    """A LISTEN ring record as bpf/capture.c on_listen writes it: the listener's tgid, comm and
    cgroup id, its socket's family and local end (an AF_INET address in the first 4 bytes)."""
    raw = socket.inet_pton(family, address)
    h = ev.EventHdr(kind=int(EventKind.LISTEN), pid=pid, tid=pid, fd=-1, cgroup_id=1, family=family,
                    sock_type=socket.SOCK_STREAM, local_port=port, comm=b"nginx")  # fmt: skip
    h.local_addr[: len(raw)] = list(raw)
    return bytes(h)


def client_call(address: str, port: int) -> Call:
    return Call(protocol="http", role=Role.CLIENT, start_ns=1_000, end_ns=2_000, name="GET",
                attributes={"http.request.method": "GET", "http.response.status_code": 200},
                conn=Connection(pid=200, tid=200, fd=5, peer=Endpoint(address, port), comm="curl"))  # fmt: skip


HOST_NET, CONTAINER_NET = "net:[4026531840]", "net:[4026532999]"


def netns(root: Path, **links: str) -> Path:
    """/proc/<pid>/ns/net links (as readlink gives them) in a fixture tree: key "self" is the agent."""
    for pid, target in links.items():
        (root / "proc" / pid.lstrip("p") / "ns").mkdir(parents=True, exist_ok=True)
        (root / "proc" / pid.lstrip("p") / "ns" / "net").symlink_to(target)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The host tree with nginx (pid 100) in the agent's network namespace and pid 101 in a
    container's own."""
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "host", root, symlinks=True)
    return netns(root, self=HOST_NET, p100=HOST_NET, p101=CONTAINER_NET)


@pytest.fixture
def listeners_tree(tmp_path: Path) -> Path:
    """The listeners tree (pid 4242 listens on 127.0.0.1:18401...), pids 77 and 78 in the host's
    network namespace."""
    root = tmp_path / "listeners"
    shutil.copytree(FIXTURES / "listeners", root, symlinks=True)
    return netns(root, self=HOST_NET, p77=HOST_NET, p78=HOST_NET)


def pipeline(tree: Path) -> tuple[Pipeline, ListenerMap, ServiceCache, Exported]:
    """The listener table is empty and stays so unless told, as if the new server came up between
    two refreshes."""
    return event_fed_pipeline(tree, docker=DockerMetadata(ReplayDockerClient(str(FIXTURES / "docker"))))


@pytest.mark.parametrize(
    ("family", "listen_on", "port", "peer", "named"),
    [
        (V4, "127.0.0.1", 22401, "127.0.0.1", True),
        (V4, "127.0.0.1", 22401, "::ffff:127.0.0.1", True),  # an AF_INET6 client's view of it
        (V4, "0.0.0.0", 22402, "127.0.0.1", True),  # wildcard, loopback peer
        (V4, "0.0.0.0", 22402, "127.0.0.5", True),
        (V4, "0.0.0.0", 22402, "10.1.2.3", False),  # another host's port 22402
        (V6, "::", 22403, "127.0.0.1", True),  # dual-stack wildcard
        (V6, "::", 22403, "::1", True),
        (V6, "::1", 22404, "::1", True),
        (V6, "::ffff:127.0.0.1", 22405, "127.0.0.1", True),  # IPv4-mapped bind of an AF_INET6 socket
    ],
)
def test_first_client_call_after_listen_names_the_peer(tree: Path, family: int, listen_on: str, port: int,
                                                       peer: str, named: bool) -> None:  # fmt: skip
    pipe, listeners, cache, exported = pipeline(tree)
    raw = listen_record(family, listen_on, port)
    pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.dropped == {}
    assert cache.peek(NGINX) is not None  # read at the event: the span's lookup only peeks
    pipe.on_call(client_call(peer, port))
    (span,) = exported.spans
    attrs = dict(span.attributes or {})
    assert {k: attrs[k] for k in NGINX_PEER if k in attrs} == (NGINX_PEER if named else {})
    assert listeners.refreshes == 0  # no /proc scan was needed


@pytest.mark.parametrize(
    ("pid", "why"),
    [
        (101, "a container's own network namespace: its 127.0.0.1:22407 is not the host's"),
        (4321, "gone before its event was handled: the refresh decides"),
    ],
)
def test_a_listener_elsewhere_is_not_learnt(tree: Path, pid: int, why: str) -> None:
    pipe, listeners, cache, exported = pipeline(tree)
    raw = listen_record(V4, "127.0.0.1", 22407, pid=pid)
    pipe.on_event(ev.decode(raw, len(raw)))
    pipe.on_call(client_call("127.0.0.1", 22407))
    (span,) = exported.spans
    assert "service.peer.name" not in dict(span.attributes or {}), why
    assert (listeners.snapshot(), listeners.other_netns, cache.peek(pid)) == ({}, 1, None)


def test_without_the_event_the_first_call_has_no_peer(tree: Path) -> None:
    """The same call with no LISTEN event before it: the table has not learnt the server."""
    pipe, _, _, exported = pipeline(tree)
    pipe.on_call(client_call("127.0.0.1", 22401))
    (span,) = exported.spans
    assert "service.peer.name" not in dict(span.attributes or {})


def test_listen_learnt_during_a_refresh_survives_it(listeners_tree: Path) -> None:
    """The refresh thread read the kernel's listeners just before the server listened; the LISTEN
    event lands while it scans /proc: the table it installs keeps the new listener."""
    listeners = ListenerMap(ProcFS(str(listeners_tree)), min_gap=0.0)
    real = listeners._listening

    def read_then_listen() -> dict[int, tuple[str, int]]:
        sockets = real()
        listeners.learn("127.0.0.1", 22410, 77)
        return sockets

    listeners._listening = read_then_listen
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 22410) == 77
    assert listeners.pid_for("127.0.0.1", 18401) == 4242  # what the read found


def test_refresh_after_the_event_replaces_what_it_taught(listeners_tree: Path) -> None:
    """What the kernel read later says wins: the listener gone (no entry) or held by another pid."""
    listeners = ListenerMap(ProcFS(str(listeners_tree)), min_gap=0.0)
    listeners.learn("127.0.0.1", 22411, 77)  # closed before the refresh: not in the fixture
    listeners.learn("127.0.0.1", 18401, 77)  # the fixture's fd scan says pid 4242 holds it
    assert (listeners.pid_for("127.0.0.1", 22411), listeners.pid_for("127.0.0.1", 18401)) == (77, 77)
    listeners.refresh()
    assert (listeners.pid_for("127.0.0.1", 22411), listeners.pid_for("127.0.0.1", 18401)) == (None, 4242)
    assert listeners._learnt == {}


def test_learn_is_bounded_like_the_refresh(listeners_tree: Path) -> None:
    listeners = ListenerMap(ProcFS(str(listeners_tree)), max_entries=2)
    for port in (22420, 22421, 22422):
        listeners.learn("127.0.0.1", port, 77)
    assert listeners.snapshot() == {("127.0.0.1", 22420): 77, ("127.0.0.1", 22421): 77}
    assert listeners.truncated == 1
    listeners.learn("127.0.0.1", 22420, 78)  # a known endpoint may change hands at the bound
    assert listeners.pid_for("127.0.0.1", 22420) == 78


def proc_record(kind: EventKind, pid: int, parent: int = 0) -> bytes:
    """A FORK (pid = the child, size = its parent's tgid) or EXIT ring record."""
    h = ev.EventHdr(kind=int(kind), pid=pid, tid=pid, fd=-1, cgroup_id=1, size=parent, comm=b"nginx")
    return bytes(h)


GONE, GONE_TOO = 4321, 4322  # no /proc entry in the tree: exited before their events were handled


@pytest.mark.parametrize(
    ("events", "named"),
    [
        # nginx as systemd's Type=forking starts it: the launcher listens, forks the master, exits
        ([listen_record(V4, "127.0.0.1", 22408, pid=GONE), proc_record(EventKind.FORK, NGINX, GONE),
          proc_record(EventKind.EXIT, GONE)], True),
        # a double fork: the first child is gone too when its FORK event is handled
        ([listen_record(V4, "127.0.0.1", 22408, pid=GONE), proc_record(EventKind.FORK, GONE_TOO, GONE),
          proc_record(EventKind.EXIT, GONE), proc_record(EventKind.FORK, NGINX, GONE_TOO)], True),
        # the listener exited without a child: its socket went with it, nobody is named
        ([listen_record(V4, "127.0.0.1", 22408, pid=GONE), proc_record(EventKind.EXIT, GONE),
          proc_record(EventKind.FORK, NGINX, GONE)], False),
        # a container's process, alive in its own namespace, forks: its child is not learnt either
        ([listen_record(V4, "127.0.0.1", 22408, pid=101), proc_record(EventKind.FORK, NGINX, 101)], False),
    ],
)
def test_a_gone_listener_is_learnt_from_the_child_it_forked(tree: Path, events: list[bytes], named: bool) -> None:
    """A daemonising server's launcher (nginx -g 'daemon on;') opens its ports, forks and exits
    before the agent handles its LISTEN event: the first client call had no peer."""
    pipe, listeners, _, exported = pipeline(tree)
    for raw in events:
        pipe.on_event(ev.decode(raw, len(raw)))
    pipe.on_call(client_call("127.0.0.1", 22408))
    (span,) = exported.spans
    attrs = dict(span.attributes or {})
    assert pipe.dropped == {}
    assert {k: attrs[k] for k in NGINX_PEER if k in attrs} == (NGINX_PEER if named else {})
    assert listeners.snapshot() == ({("127.0.0.1", 22408): NGINX} if named else {})
    assert pipe.listens is not None and pipe.listens._orphans == {}


LAUNCHER, MIDDLE = 4400, 4401  # alive (nginx) when their LISTEN/FORK events are handled, gone at their EXIT


def alive(tree: Path, pid: int) -> None:
    """``pid`` runs nginx: a copy of pid 100, in the agent's network namespace as it is."""
    shutil.copytree(tree / "proc" / str(NGINX), tree / "proc" / str(pid), symlinks=True)


def gone(tree: Path, pid: int) -> None:
    shutil.rmtree(tree / "proc" / str(pid))


FORK, EXEC, EXIT = EventKind.FORK, EventKind.EXEC, EventKind.EXIT


@pytest.mark.parametrize(
    ("steps", "named"),
    [
        # nginx daemonising, its LISTEN event read before the launcher exited: the master holds the socket
        ([("listen", LAUNCHER), (FORK, NGINX, LAUNCHER), ("gone", LAUNCHER), (EXIT, LAUNCHER)], NGINX),
        # the same with the master forked after the launcher's EXIT was queued (events of one ring, in order)
        ([("listen", LAUNCHER), (FORK, NGINX, LAUNCHER), ("gone", LAUNCHER), (EXIT, LAUNCHER),
          (FORK, 102, NGINX)], NGINX),
        # a double fork, both forks read before the first child exited
        ([("listen", LAUNCHER), (FORK, MIDDLE, LAUNCHER), (FORK, NGINX, MIDDLE), ("gone", LAUNCHER),
          (EXIT, LAUNCHER), ("gone", MIDDLE), (EXIT, MIDDLE)], NGINX),
        # a double fork whose first child is gone too when the launcher's EXIT is read
        ([("listen", LAUNCHER), (FORK, MIDDLE, LAUNCHER), (FORK, NGINX, MIDDLE), ("gone", LAUNCHER),
          ("gone", MIDDLE), (EXIT, LAUNCHER), (EXIT, MIDDLE)], NGINX),
        # a child that ran another program does not hold a server's socket (close-on-exec)
        ([("listen", LAUNCHER), (FORK, NGINX, LAUNCHER), (EXEC, NGINX, LAUNCHER), ("gone", LAUNCHER),
          (EXIT, LAUNCHER)], LAUNCHER),
        # its only child exited first: nobody is left to name (the refresh decides)
        ([("listen", LAUNCHER), (FORK, MIDDLE, LAUNCHER), ("gone", MIDDLE), (EXIT, MIDDLE), ("gone", LAUNCHER),
          (EXIT, LAUNCHER)], LAUNCHER),
        # a fork by a process the table does not name is not followed
        ([(FORK, NGINX, LAUNCHER), ("listen", LAUNCHER), ("gone", LAUNCHER), (EXIT, LAUNCHER)], LAUNCHER),
    ],
)
def test_an_exited_listener_is_replaced_by_the_child_holding_its_socket(
        tree: Path, steps: list[tuple[Any, ...]], named: int) -> None:  # fmt: skip
    """The LISTEN event of a daemonising nginx's launcher was read while it was still alive (the
    ring is read every 50 ms; it forks the master and exits within a few): the table named the
    launcher, and after its EXIT a dead pid (no Service to peek) until the next periodic refresh,
    5 s later: the first calls had no peer (test_peer_first_call, 2 runs in 5)."""
    alive(tree, LAUNCHER)
    alive(tree, MIDDLE)
    pipe, listeners, cache, exported = pipeline(tree)
    for what, pid, *parent in steps:
        if what == "gone":
            gone(tree, pid)
            continue
        if what == "listen":
            raw = listen_record(V4, "127.0.0.1", 22409, pid=pid)
        else:
            raw = proc_record(EventKind(what), pid, *parent)
        pipe.on_event(ev.decode(raw, len(raw)))
    pipe.on_call(client_call("127.0.0.1", 22409))
    (span,) = exported.spans
    attrs = dict(span.attributes or {})
    assert pipe.dropped == {}
    assert listeners.snapshot() == {("127.0.0.1", 22409): named}
    assert {k: attrs[k] for k in NGINX_PEER if k in attrs} == (NGINX_PEER if named == NGINX else {})
    assert (cache.peek(named) is not None) == (named == NGINX)


def test_an_heir_named_during_a_refresh_survives_it_and_is_checked_by_the_next(listeners_tree: Path) -> None:
    """The holder of 127.0.0.1:18401 exits while a refresh scans /proc, its child named: the table
    the refresh installs names the child, not the dead pid; the next refresh reads the child's
    fds, and the fixture says pid 4242 holds that socket, not 77."""
    listeners = ListenerMap(ProcFS(str(listeners_tree)), min_gap=0.0)
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 18401) == 4242
    swap = listeners._swap

    def exit_then_swap(sockets: dict[int, tuple[str, int]], known: dict[int, int], started: float) -> set[int]:
        assert listeners.holder_exited(4242, [78, 77]) == 78  # its latest child first
        return swap(sockets, known, started)

    listeners._swap = exit_then_swap
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 18401) == 78
    listeners._swap = swap
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", 18401) == 4242
