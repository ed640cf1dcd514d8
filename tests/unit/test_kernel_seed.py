"""Seeding already-open sockets from a fixture /proc tree (real /proc/net/tcp lines from this host)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hostagent.probes.registry import DATA_PROGRAMS, GROUP_PROGRAMS, PROBE_NAMES, groups_for
from hostagent.probes.seed import SeedInfo, parse_hex_addr, parse_net_table, seed_sockets

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
# Captured from /proc/net/tcp here: a listener on 127.0.0.1:18116 and one accepted connection.
TCP = HEADER + (
    "   0: 0100007F:46B4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 "
    "51234 1 0 100 0 0 10 0\n"
    "   1: 0100007F:46B4 0100007F:C1E2 01 00000000:00000000 00:00000000 00000000     0        0 "
    "51236 1 0 20 4 30 10 -1\n"
)  # fmt: skip
TCP6 = HEADER + (
    "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 "
    "00000000:00000000 00:00000000 00000000     0        0 61000 1 0 20 4 30 10 -1\n"
)
UDP = HEADER + (
    "  12: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 71000 2 0 0\n"
)


@pytest.mark.parametrize(
    ("text", "addr", "port"),
    [
        ("0100007F:46B4", bytes([127, 0, 0, 1]), 18100),  # little-endian word, host-order port
        ("00000000:0000", bytes(4), 0),
        ("00000000000000000000000001000000:1F90", socket.inet_pton(socket.AF_INET6, "::1"), 8080),
    ],
)
def test_parse_hex_addr(text: str, addr: bytes, port: int) -> None:
    assert parse_hex_addr(text) == (addr, port)


def test_parse_net_table() -> None:
    got = parse_net_table(TCP, socket.AF_INET, socket.SOCK_STREAM)
    assert got == {
        51234: SeedInfo(2, 1, bytes(4), 0, bytes([127, 0, 0, 1]), 18100),  # the listener's bound end
        51236: SeedInfo(2, 1, bytes([127, 0, 0, 1]), 49634, bytes([127, 0, 0, 1]), 18100),
    }


def make_proc(root: Path) -> None:
    net = root / "net"
    net.mkdir(parents=True)
    (net / "tcp").write_text(TCP)
    (net / "tcp6").write_text(TCP6)
    (net / "udp").write_text(UDP)
    (net / "udp6").write_text(HEADER)
    for pid, fds in {
        "100": {"3": "socket:[51234]", "4": "socket:[51236]", "5": "socket:[99999]", "6": "/var/log/x"},
        "200": {"7": "socket:[61000]", "8": "socket:[71000]", "9": "pipe:[5]"},
        "300": {"3": "socket:[51236]"},  # the agent itself: skipped
    }.items():
        (root / pid / "fd").mkdir(parents=True)
        for fd, target in fds.items():
            os.symlink(target, root / pid / "fd" / fd)
    (root / "self").mkdir()  # not a pid


def test_seed_sockets_over_fixture_proc(tmp_path: Path) -> None:
    make_proc(tmp_path)
    got = sorted((pid, fd, i.family, i.sock_type, i.peer_port) for pid, fd, i in seed_sockets(tmp_path, 300))
    assert got == [
        (100, 3, socket.AF_INET, socket.SOCK_STREAM, 0),  # listener
        (100, 4, socket.AF_INET, socket.SOCK_STREAM, 49634),
        (200, 7, socket.AF_INET6, socket.SOCK_STREAM, 54321),
        (200, 8, socket.AF_INET, socket.SOCK_DGRAM, 0),
    ]  # socket:[99999] is not inet (a unix socket), pipes and files are not sockets


def test_registry_groups() -> None:
    assert PROBE_NAMES == ("http", "http2", "postgres", "mysql", "redis", "dns", "identity")
    assert groups_for({"http", "redis"}) == {"socket"}
    assert groups_for({"identity"}) == {"process"}
    assert groups_for({"nope"}) == set()
    lifecycle = GROUP_PROGRAMS["socket"]
    assert len({fn for _, fn in lifecycle}) == 7 and len(lifecycle) == 7
    # the two data paths: an enter/exit pair per data syscall, or the socket layer's tracepoints
    # (+ the *mmsg pairs and the datagram receives' exits); each with its own socket(), connect(),
    # accept() and TCP state programs
    syscalls, sock = DATA_PROGRAMS["syscalls"], DATA_PROGRAMS["socket"]
    assert len({fn for _, fn in lifecycle + syscalls}) == 31 and len(lifecycle + syscalls) == 46
    assert len({fn for _, fn in lifecycle + sock}) == 19 and len(lifecycle + sock) == 25
    # the socket path's opens and copies read their arguments from the saved registers: no enter
    # programs (dup/dup2/dup3/fcntl share one exit on either path)
    opens = ("socket", "connect", "accept", "accept4", "dup", "dup2", "dup3", "fcntl")
    assert not [tp for tp, _ in sock if tp in {f"syscalls:sys_enter_{s}" for s in opens}]
    assert {tp for tp, _ in sock} >= {f"syscalls:sys_exit_{s}" for s in opens} | {"sock:inet_sock_set_state"}
    assert {tp for tp, _ in syscalls} >= {f"syscalls:sys_{e}_{s}" for s in opens for e in ("enter", "exit")}
    dups = ("dup", "dup2", "dup3", "fcntl")
    assert {fn for tp, fn in sock if tp in {f"syscalls:sys_exit_{s}" for s in dups}} == {"sock__exit_dup_regs"}
    assert {fn for tp, fn in syscalls if tp in {f"syscalls:sys_exit_{s}" for s in dups}} == {"sock__exit_dup"}
    assert [tp for tp, _ in sock if tp.startswith("raw:")] == [
        "raw:tcp_sendmsg_locked", "raw:sock_send_length", "raw:sock_recv_length"]
