"""Socket activation: the peer of a client call is the service that accepts on the socket, not the
launcher (systemd, inetd) that listens for it and keeps it.

tests/fixtures/proc/activation is a real systemd 252 (PID 1 in systemd-nspawn, host network) with
web.socket (127.0.0.1:22080, Accept=no) and the web.service it started, which holds the listener
as fd 3; systemd holds it as fd 33. The LISTEN event names systemd, and so could a walk of /proc:
the first calls' peer was "systemd" (the real agent before this fix named it for all 3 calls to this
setup; the new one names "web").
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Optional

import pytest

from hostagent.identity.listeners import ListenerMap
from hostagent.identity.procfs import ProcFS
from hostagent.model import Call, Connection, Endpoint, EventKind, Role
from hostagent.pipeline import Pipeline
from hostagent.probes import events as ev
from tests.support.pipeline_parts import Exported, event_fed_pipeline

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "proc" / "activation"
SYSTEMD, WEB = 32741, 355  # host pids in the capture
PORT, INODE = 22080, 32069413
HOST_NET, OTHER_NET = "net:[4026531840]", "net:[4026532999]"


class ProcListing(ProcFS):
    """pids in the order /proc lists them (ascending); a tmp directory's listing has no order."""

    def pids(self) -> list[int]:
        return sorted(super().pids())


def tree(tmp_path: Path, launcher: int = SYSTEMD, server: Optional[int] = WEB,
         workers: tuple[int, ...] = ()) -> Path:  # fmt: skip
    """The capture, its launcher and server renumbered (PID 1: the host's own systemd; a server
    started once the pid numbers had passed the launcher's), ``workers``: more processes of the
    server's (copies of it, as a pre-fork server's); every pid in the host's network namespace."""
    root = tmp_path / "activation"
    (root / "proc").mkdir(parents=True)
    shutil.copytree(FIXTURE / "proc" / "net", root / "proc" / "net")
    shutil.copytree(FIXTURE / "proc" / str(SYSTEMD), root / "proc" / str(launcher), symlinks=True)
    for pid in (server, *workers) if server is not None else ():
        shutil.copytree(FIXTURE / "proc" / str(WEB), root / "proc" / str(pid), symlinks=True)
    for pid in ("self", launcher, server, *workers):
        if pid is not None:
            (root / "proc" / str(pid) / "ns").mkdir(parents=True, exist_ok=True)
            (root / "proc" / str(pid) / "ns" / "net").symlink_to(HOST_NET)
    return root


@pytest.mark.parametrize(
    ("launcher", "server"),
    [
        (SYSTEMD, WEB),  # as captured: systemd in a container (named systemd, not PID 1 here)
        (1, WEB),  # the host's own systemd
        (SYSTEMD, 40123),  # the server listed after its launcher: the walk meets the launcher first
    ],
)
def test_a_walk_names_the_server_not_its_launcher(tmp_path: Path, launcher: int, server: int) -> None:
    listeners = ListenerMap(ProcListing(str(tree(tmp_path, launcher, server))))
    listeners.refresh()
    assert (listeners.pid_for("127.0.0.1", PORT), listeners.fd_walks) == (server, 1)


def test_a_launcher_event_then_a_refresh_names_the_server(tmp_path: Path) -> None:
    """The LISTEN event named systemd (it listens at boot): the refresh looked in systemd's fds
    first, found the socket there and stopped, naming systemd until the next change."""
    listeners = ListenerMap(ProcListing(str(tree(tmp_path, 1, WEB))))
    assert listeners.learn("127.0.0.1", PORT, 1)
    listeners.refresh()
    assert listeners.pid_for("127.0.0.1", PORT) == WEB


def test_a_launcher_alone_is_named_and_not_walked_for_again(tmp_path: Path) -> None:
    """The service is not started yet (on demand): the launcher is the only holder, the best there
    is until a process accepts; it is found, so later refreshes do not walk for it again."""
    listeners = ListenerMap(ProcListing(str(tree(tmp_path, SYSTEMD, None))))
    listeners.refresh()
    listeners.refresh()
    assert (listeners.pid_for("127.0.0.1", PORT), listeners.fd_walks) == (SYSTEMD, 1)


def listen_record(pid: int, comm: bytes) -> bytes:
    return record(EventKind.LISTEN, pid, comm, local=("127.0.0.1", PORT))


def record(kind: EventKind, pid: int, comm: bytes, local: tuple[str, int] = ("", 0), fd: int = -1) -> bytes:
    """A ring record as bpf/capture.c writes it: LISTEN and ACCEPT name the local end (ACCEPT:
    the address the connection reached); EXIT only the pid."""
    h = ev.EventHdr(kind=int(kind), pid=pid, tid=pid, fd=fd, cgroup_id=1, comm=comm)
    if local[1]:
        raw = socket.inet_pton(socket.AF_INET, local[0])
        h.family, h.sock_type, h.local_port = socket.AF_INET, socket.SOCK_STREAM, local[1]
        h.local_addr[: len(raw)] = list(raw)
    return bytes(h)


def accept_record(pid: int, comm: bytes = b"python3") -> bytes:
    return record(EventKind.ACCEPT, pid, comm, local=("127.0.0.1", PORT), fd=4)


def exit_record(pid: int) -> bytes:
    return record(EventKind.EXIT, pid, b"python3")


def pipeline(root: Path) -> tuple[Pipeline, ListenerMap, Exported]:
    pipe, listeners, _, exported = event_fed_pipeline(root, ProcListing(str(root)))
    return pipe, listeners, exported


def peer_of_a_call(pipe: Pipeline, exported: Exported) -> Optional[object]:
    conn = Connection(pid=999, tid=999, fd=5, peer=Endpoint("127.0.0.1", PORT), comm="curl")
    pipe.on_call(Call(protocol="http", role=Role.CLIENT, start_ns=1_000, end_ns=2_000, name="GET",
                      attributes={"http.request.method": "GET"}, conn=conn))
    return dict(exported.spans[-1].attributes or {}).get("service.peer.name")


WORKER = 356  # another process of web.service (a copy of the server's /proc)
SD_LISTEN = 32750  # systemd's "(sd-listen)" child, gone: no /proc


@pytest.mark.parametrize(
    ("events", "peer", "holder"),
    [
        # systemd listened; nothing accepted yet: the launcher is all the kernel has named
        ([listen_record(SYSTEMD, b"systemd")], "systemd", SYSTEMD),
        # the service it started accepted the first connection: it serves, from this call on
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB)], "web", WEB),
        # a pre-fork server: its worker accepts, the master (the same service) stays named
        ([listen_record(WEB, b"python3"), accept_record(WORKER)], "web", WEB),
        # then a worker of the activated service accepts too: the first server stays named
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB), accept_record(WORKER)], "web", WEB),
        # the server exited (the launcher keeps the socket and starts it again on demand)
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB), exit_record(WEB)], "systemd", SYSTEMD),
        # and was started again: the new one accepts
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB), exit_record(WEB), accept_record(WORKER)],
         "web", WORKER),
        # systemd 252 listens in a short-lived "(sd-listen)" child, gone when its event is read: the
        # table learnt nothing, and the first accept names the process that holds the listener
        ([listen_record(SD_LISTEN, b"(sd-listen)"), accept_record(WEB)], "web", WEB),
        ([accept_record(WEB)], "web", WEB),
    ],
)
def test_the_process_that_accepts_is_the_peer(tmp_path: Path, events: list[bytes], peer: str, holder: int) -> None:
    pipe, listeners, exported = pipeline(tree(tmp_path, SYSTEMD, WEB, workers=(WORKER,)))
    for raw in events:
        pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.dropped == {}
    assert (peer_of_a_call(pipe, exported), listeners.snapshot()) == (peer, {("127.0.0.1", PORT): holder})


def test_an_accept_in_another_network_namespace_names_nobody_new(tmp_path: Path) -> None:
    """A container's own 127.0.0.1:22080 is not the host's: its accepts teach nothing."""
    root = tree(tmp_path, SYSTEMD, WEB)
    (root / "proc" / str(WEB) / "ns" / "net").unlink()
    (root / "proc" / str(WEB) / "ns" / "net").symlink_to(OTHER_NET)
    pipe, listeners, exported = pipeline(root)
    for raw in (listen_record(SYSTEMD, b"systemd"), accept_record(WEB)):
        pipe.on_event(ev.decode(raw, len(raw)))
    assert (peer_of_a_call(pipe, exported), listeners.served) == ("systemd", 0)


def test_accepts_in_another_network_namespace_teach_nothing_and_are_judged_once(tmp_path: Path) -> None:
    """No LISTEN event learnt (a container's server, started before the agent): its accepts on
    its own 127.0.0.1:22080 are not the host's listener; its namespace is read once, not per accept."""
    root = tree(tmp_path, SYSTEMD, WEB)
    (root / "proc" / str(WEB) / "ns" / "net").unlink()
    (root / "proc" / str(WEB) / "ns" / "net").symlink_to(OTHER_NET)
    pipe, listeners, exported = pipeline(root)
    for raw in (accept_record(WEB), accept_record(WEB), accept_record(WEB)):
        pipe.on_event(ev.decode(raw, len(raw)))
    assert (peer_of_a_call(pipe, exported), listeners.snapshot(), listeners.other_netns) == (None, {}, 1)


def test_what_an_accept_taught_survives_refreshes_until_the_server_exits(tmp_path: Path) -> None:
    """The refresh reads the holders again (here it looks in the launcher's fds first, as its
    LISTEN event named it); the server stays named while it lives, and after its exit the table
    names the launcher, not a dead pid, at once and after the next refresh."""
    root = tree(tmp_path, 1, WEB)
    pipe, listeners, exported = pipeline(root)
    for raw in (listen_record(1, b"systemd"), accept_record(WEB)):
        pipe.on_event(ev.decode(raw, len(raw)))
    listeners.refresh()
    assert listeners.snapshot() == {("127.0.0.1", PORT): WEB}
    shutil.rmtree(root / "proc" / str(WEB))  # exited: its fds are gone, the launcher's socket is not
    raw = exit_record(WEB)
    pipe.on_event(ev.decode(raw, len(raw)))
    assert listeners.snapshot() == {("127.0.0.1", PORT): 1}
    listeners.refresh()
    assert (peer_of_a_call(pipe, exported), listeners.snapshot()) == ("systemd", {("127.0.0.1", PORT): 1})


def test_repeated_accepts_that_teach_nothing_skip_the_listener_lookups(tmp_path: Path) -> None:
    """A connection per request makes an ACCEPT per call: once an accepting process was judged on
    an end (a pre-fork worker of the listener's service), its next accepts there are answered from
    a memo held by the table's generation, without the listener table's lookups."""
    pipe, listeners, exported = pipeline(tree(tmp_path, SYSTEMD, WEB, workers=(WORKER,)))
    asked: list[int] = []
    holder = listeners.holder

    def counting(address: str, port: int) -> Optional[tuple[tuple[str, int], int]]:
        asked.append(port)
        return holder(address, port)

    listeners.holder = counting  # type: ignore[method-assign]
    for raw in (listen_record(WEB, b"python3"), *[accept_record(WORKER)] * 5):
        pipe.on_event(ev.decode(raw, len(raw)))
    assert len(asked) == 2  # judged, then found judged (remembered); the other three skip both
    assert (peer_of_a_call(pipe, exported), listeners.snapshot()) == ("web", {("127.0.0.1", PORT): WEB})
    listeners.learn("127.0.0.1", PORT, WEB)  # the table changed (a new generation): asked again
    raw = accept_record(WORKER)
    pipe.on_event(ev.decode(raw, len(raw)))
    assert len(asked) == 3


@pytest.mark.parametrize(
    ("events", "peer", "holder"),
    [
        # the server's accepts remembered as teaching nothing; it exits, and its pid comes back
        # accepting: judged again (its EXIT cleared what was remembered), it serves again
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB), accept_record(WEB), exit_record(WEB),
          accept_record(WEB)], "web", WEB),
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB), accept_record(WEB), accept_record(WEB),
          exit_record(WEB), accept_record(WORKER), accept_record(WORKER)], "web", WORKER),
        # a pre-fork worker's remembered accepts, then the launcher takes the endpoint: the worker
        # was judged on it already (once per pid and end), so the launcher stays named
        ([listen_record(WEB, b"python3"), accept_record(WORKER), accept_record(WORKER),
          listen_record(SYSTEMD, b"systemd"), accept_record(WORKER)], "systemd", SYSTEMD),
        # the activated server and a worker of its service, each accepting again: the server stays named
        ([listen_record(SYSTEMD, b"systemd"), accept_record(WEB), accept_record(WEB), accept_record(WORKER),
          accept_record(WORKER)], "web", WEB),
    ],
)
def test_remembered_accepts_are_judged_again_after_a_change(tmp_path: Path, events: list[bytes], peer: str,
                                                           holder: int) -> None:
    pipe, listeners, exported = pipeline(tree(tmp_path, SYSTEMD, WEB, workers=(WORKER,)))
    for raw in events:
        pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.dropped == {}
    assert (peer_of_a_call(pipe, exported), listeners.snapshot()) == (peer, {("127.0.0.1", PORT): holder})
