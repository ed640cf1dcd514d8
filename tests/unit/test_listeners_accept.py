"""Launchers that accept and hand each connection to a new process (systemd ``Accept=yes``, inetd
``nowait``): the peer of a client call is that process's service, not the launcher's.

tests/fixtures/proc/accept is a real systemd 252 (PID 1 in systemd-nspawn, host network) with
hello.socket (127.0.0.1:22081, Accept=yes) and the hello@0-127.0.0.1:22081-127.0.0.1:55334.service
it ran for one connection, and a real openbsd-inetd (127.0.0.1:22082 nowait) with the python3 it
forked for one connection. Only the launchers hold the listeners and no server ever accepts: every
call's peer was "systemd" or "inetd" (the real agent named "systemd" for each of 3 curls to such a
socket; the fixed one names "hello").
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Optional

import pytest

from hostagent.identity.listeners import ListenerMap
from hostagent.model import Call, Connection, Endpoint, EventKind, Role
from hostagent.pipeline import Pipeline
from hostagent.probes import events as ev
from tests.support.pipeline_parts import Exported, event_fed_pipeline

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "proc" / "accept"
SYSTEMD, HELLO, INETD, INETD_CHILD = 7655, 7826, 7822, 7828  # host pids in the capture
SD_PORT, INETD_PORT = 22081, 22082
SD_ACCEPT = 7825  # systemd 252 accepts in a short-lived "(sd-accept)" child, gone when read
SD_LISTENER = 7660  # and listens in a short-lived "(sd-listen)" child
NEXT_HELLO, NEXT_INETD_CHILD = 7900, 7901  # copies of the servers: the next connections'
HOST_NET = "net:[4026531840]"


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "accept"
    shutil.copytree(FIXTURE, root, symlinks=True)
    for pid, like in ((NEXT_HELLO, HELLO), (NEXT_INETD_CHILD, INETD_CHILD)):
        shutil.copytree(root / "proc" / str(like), root / "proc" / str(pid), symlinks=True)
    for name in ("self", *map(str, (SYSTEMD, HELLO, INETD, INETD_CHILD, NEXT_HELLO, NEXT_INETD_CHILD))):
        (root / "proc" / name / "ns").mkdir(parents=True, exist_ok=True)
        (root / "proc" / name / "ns" / "net").symlink_to(HOST_NET)
    return root


def record(kind: EventKind, pid: int, comm: bytes, port: int = 0, parent: int = 0, payload: bytes = b"",
           ts_ns: int = 0) -> bytes:  # fmt: skip
    """A ring record as bpf/capture.c writes it: LISTEN and ACCEPT name the local end, EXEC its
    parent's tgid (size) and the executed file (payload), EXIT only the pid."""
    h = ev.EventHdr(kind=int(kind), pid=pid, tid=pid, fd=-1, cgroup_id=1, comm=comm, size=parent,
                    captured_len=len(payload), ts_ns=ts_ns)  # fmt: skip
    if port:
        raw = socket.inet_pton(socket.AF_INET, "127.0.0.1")
        h.family, h.sock_type, h.local_port = socket.AF_INET, socket.SOCK_STREAM, port
        h.local_addr[: len(raw)] = list(raw)
    return bytes(h) + payload


def listen(pid: int, comm: bytes, port: int) -> bytes:
    return record(EventKind.LISTEN, pid, comm, port)


def accept(pid: int, comm: bytes, port: int) -> bytes:
    return record(EventKind.ACCEPT, pid, comm, port)


def execs(pid: int, parent: int, ts_ns: int = 0) -> bytes:
    return record(EventKind.EXEC, pid, b"python3", parent=parent, payload=b"/usr/bin/python3.11", ts_ns=ts_ns)


def exits(pid: int) -> bytes:
    return record(EventKind.EXIT, pid, b"python3")


def pipeline(root: Path) -> tuple[Pipeline, ListenerMap, Exported]:
    pipe, listeners, _, exported = event_fed_pipeline(root)
    return pipe, listeners, exported


def peer_of_a_call(pipe: Pipeline, exported: Exported, port: int) -> Optional[object]:
    conn = Connection(pid=999, tid=999, fd=5, peer=Endpoint("127.0.0.1", port), comm="curl")
    pipe.on_call(Call(protocol="http", role=Role.CLIENT, start_ns=1_000, end_ns=2_000, name="GET",
                      attributes={"http.request.method": "GET"}, conn=conn))
    return dict(exported.spans[-1].attributes or {}).get("service.peer.name")


SD_LISTEN = listen(SYSTEMD, b"systemd", SD_PORT)
INETD_LISTEN = listen(INETD, b"inetd", INETD_PORT)
SD_CONNECTION = [accept(SD_ACCEPT, b"(sd-accept)", SD_PORT), execs(HELLO, SYSTEMD)]
INETD_CONNECTION = [accept(INETD, b"inetd", INETD_PORT), execs(INETD_CHILD, INETD)]


@pytest.mark.parametrize(
    ("events", "port", "peer", "holder"),
    [
        # systemd listens; no connection yet: the launcher is all there is
        ([SD_LISTEN], SD_PORT, "systemd", SYSTEMD),
        # a connection: systemd accepts (in its sd-accept child) and starts the unit named after it
        ([SD_LISTEN, *SD_CONNECTION], SD_PORT, "hello", HELLO),
        # which served it and exited: the next connection goes to hello@ again, not to systemd
        ([SD_LISTEN, *SD_CONNECTION, exits(HELLO)], SD_PORT, "hello", HELLO),
        # the next connection's process takes the endpoint
        ([SD_LISTEN, *SD_CONNECTION, exits(HELLO), accept(SD_ACCEPT, b"(sd-accept)", SD_PORT),
          execs(NEXT_HELLO, SYSTEMD)], SD_PORT, "hello", NEXT_HELLO),
        # the unit's name says which endpoint: its accept need not be seen (lost, or before the agent)
        ([SD_LISTEN, execs(HELLO, SYSTEMD)], SD_PORT, "hello", HELLO),
        # systemd 252 listens in an "(sd-listen)" child, gone when its LISTEN event is read (no
        # holder learnt): the first connection's unit names the endpoint, for its launcher
        ([listen(SD_LISTENER, b"(sd-listen)", SD_PORT), execs(HELLO, SYSTEMD)], SD_PORT, "hello", HELLO),
        # another unit started by systemd after an accept is no server of it (inetd.service here)
        ([SD_LISTEN, accept(SD_ACCEPT, b"(sd-accept)", SD_PORT), execs(INETD, SYSTEMD)], SD_PORT, "systemd",
         SYSTEMD),
        # inetd listens, accepts, forks and execs the server in its own unit
        ([INETD_LISTEN], INETD_PORT, "inetd", INETD),
        ([INETD_LISTEN, *INETD_CONNECTION], INETD_PORT, "hello.py", INETD_CHILD),
        ([INETD_LISTEN, *INETD_CONNECTION, exits(INETD_CHILD)], INETD_PORT, "hello.py", INETD_CHILD),
        # inetd's next accept is its own (not judged as another server), its next child serves
        ([INETD_LISTEN, *INETD_CONNECTION, exits(INETD_CHILD), accept(INETD, b"inetd", INETD_PORT),
          execs(NEXT_INETD_CHILD, INETD)], INETD_PORT, "hello.py", NEXT_INETD_CHILD),
        # a process inetd runs without an accept before it serves no connection of this endpoint,
        ([INETD_LISTEN, execs(INETD_CHILD, INETD)], INETD_PORT, "inetd", INETD),
        # nor one it runs seconds after an accept it served itself (its internal services)
        ([INETD_LISTEN, accept(INETD, b"inetd", INETD_PORT), execs(INETD_CHILD, INETD, ts_ns=2_000_000_000)],
         INETD_PORT, "inetd", INETD),
    ],
)
def test_the_process_a_launcher_hands_a_connection_to_is_the_peer(
    tmp_path: Path, events: list[bytes], port: int, peer: str, holder: int
) -> None:
    pipe, listeners, exported = pipeline(tree(tmp_path))
    for raw in events:
        pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.dropped == {}
    assert (peer_of_a_call(pipe, exported, port), listeners.snapshot()) == (peer, {("127.0.0.1", port): holder})


def test_a_refresh_keeps_the_per_connection_server(tmp_path: Path) -> None:
    """The refresh finds only the launcher holding the listener (the server holds a connection, not
    the listener): the server stays named, after its exit too, and is not walked for."""
    root = tree(tmp_path)
    pipe, listeners, exported = pipeline(root)
    for raw in (SD_LISTEN, *SD_CONNECTION):
        pipe.on_event(ev.decode(raw, len(raw)))
    listeners.refresh()
    assert listeners.snapshot() == {("127.0.0.1", SD_PORT): HELLO, ("127.0.0.1", INETD_PORT): INETD}
    shutil.rmtree(root / "proc" / str(HELLO))
    raw = exits(HELLO)
    pipe.on_event(ev.decode(raw, len(raw)))
    listeners.refresh()
    assert (peer_of_a_call(pipe, exported, SD_PORT), listeners.snapshot()[("127.0.0.1", SD_PORT)]) == ("hello", HELLO)


def test_a_per_connection_servers_pid_reused_still_names_its_service(tmp_path: Path) -> None:
    """hello@0 exited and its pid went to another process (here an inetd, exec'd by a shell):
    the endpoint is hello's until the next connection's server takes it, whatever runs as that pid."""
    root = tree(tmp_path)
    pipe, listeners, exported = pipeline(root)
    for raw in (SD_LISTEN, *SD_CONNECTION, exits(HELLO)):
        pipe.on_event(ev.decode(raw, len(raw)))
    assert listeners.snapshot() == {("127.0.0.1", SD_PORT): HELLO}
    shutil.rmtree(root / "proc" / str(HELLO))
    shutil.copytree(root / "proc" / str(INETD), root / "proc" / str(HELLO), symlinks=True)
    raw = record(EventKind.EXEC, HELLO, b"inetd", parent=4242, payload=b"/usr/sbin/inetd")
    pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.identity is not None and pipe.identity.service_for(HELLO).name == "inetd"
    assert peer_of_a_call(pipe, exported, SD_PORT) == "hello"


def sd_listen_alive(root: Path) -> None:
    """(sd-listen) as the agent may still see it: systemd's child, holding the new listener (a copy
    of PID 1's /proc, under its own name) until it hands it to PID 1 and exits."""
    shutil.copytree(root / "proc" / str(SYSTEMD), root / "proc" / str(SD_LISTENER), symlinks=True)
    (root / "proc" / str(SD_LISTENER) / "comm").write_text("(sd-listen)\n")


@pytest.mark.parametrize("learnt_by", ["listen_event", "refresh"])
def test_a_listener_named_for_its_gone_sd_listen_child_still_names_the_first_connections_server(
        tmp_path: Path, learnt_by: str) -> None:  # fmt: skip
    """The table named systemd's "(sd-listen)" child, read while it was alive: its LISTEN event
    handled before it exited (it lives 25-45 us after listen(): measured on 34 sockets), or a
    refresh that walked /proc while it held the socket (it is no launcher: a walk prefers it to
    PID 1). After its exit the table named a dead pid, the first connection's server was refused as
    the table's holder was not its launcher, and every call until the next refresh had no peer at
    all: what the e2e Accept=yes test saw once in 8 runs."""
    root = tree(tmp_path)
    sd_listen_alive(root)
    pipe, listeners, exported = pipeline(root)
    if learnt_by == "listen_event":
        raw = listen(SD_LISTENER, b"(sd-listen)", SD_PORT)
        pipe.on_event(ev.decode(raw, len(raw)))
    else:
        listeners.refresh()
    assert listeners.snapshot()[("127.0.0.1", SD_PORT)] == SD_LISTENER
    shutil.rmtree(root / "proc" / str(SD_LISTENER))  # it handed the socket to PID 1 and exited
    for raw in (record(EventKind.EXIT, SD_LISTENER, b"(sd-listen)"), accept(SD_ACCEPT, b"(sd-accept)", SD_PORT),
                execs(HELLO, SYSTEMD)):  # fmt: skip
        pipe.on_event(ev.decode(raw, len(raw)))
    assert pipe.dropped == {}
    assert (peer_of_a_call(pipe, exported, SD_PORT), listeners.snapshot()[("127.0.0.1", SD_PORT)]) == ("hello", HELLO)


def test_a_live_other_holder_of_the_endpoint_is_not_taken_over(tmp_path: Path) -> None:
    """The unit's name says which endpoint, not that its launcher still holds it: a live process
    the table names for it (another listener since) stays named."""
    root = tree(tmp_path)
    sd_listen_alive(root)
    pipe, listeners, _ = pipeline(root)
    for raw in (listen(SD_LISTENER, b"(sd-listen)", SD_PORT), execs(HELLO, SYSTEMD)):
        pipe.on_event(ev.decode(raw, len(raw)))
    assert listeners.snapshot()[("127.0.0.1", SD_PORT)] == SD_LISTENER
