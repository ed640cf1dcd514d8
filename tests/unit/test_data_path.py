"""Which hooks the socket group takes bytes from ([probes] data_hooks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostagent.probes.data_path import choose, tracepoint_exists

NEW = {"sock_send_length", "sock_recv_length", "tcp_sendmsg_locked"}.__contains__  # Linux >= 6.12
OLD: set[str] = set()  # Linux 6.1: neither socket-layer tracepoint


@pytest.mark.parametrize(
    ("mode", "machine", "exists", "path", "why"),
    [
        ("auto", "x86_64", NEW, "socket", "sock_send_length / sock_recv_length"),
        ("auto", "x86_64", OLD.__contains__, "syscalls",
         "no sock_send_length / sock_recv_length tracepoint (added in Linux 6.3)"),
        ("auto", "x86_64", {"sock_send_length"}.__contains__, "syscalls", "no sock_recv_length tracepoint"),
        ("auto", "aarch64", NEW, "syscalls", "x86-64 syscall registers; this machine is aarch64"),
        ("syscalls", "x86_64", NEW, "syscalls", 'data_hooks = "syscalls"'),
        ("socket", "x86_64", NEW, "socket", "sock_send_length"),
    ],
)
def test_choose(mode: str, machine: str, exists, path: str, why: str) -> None:  # type: ignore[no-untyped-def]
    got, reason = choose(mode, machine, exists)
    assert got == path
    assert why in reason


@pytest.mark.parametrize(("machine", "exists", "why"), [
    ("x86_64", OLD.__contains__, "cannot be served: this kernel has no sock_send_length"),
    ("aarch64", NEW, "cannot be served: the socket-layer programs read x86-64 syscall registers"),
])
def test_socket_where_the_kernel_cannot_is_refused_with_the_reason(machine: str, exists, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=why):
        choose("socket", machine, exists)


def test_tracepoint_exists_looks_in_every_category(tmp_path: Path) -> None:
    (tmp_path / "events" / "sock" / "sock_send_length").mkdir(parents=True)
    (tmp_path / "events" / "sock" / "sock_send_length" / "format").write_text("name: sock_send_length\n")
    (tmp_path / "events" / "tcp" / "tcp_probe").mkdir(parents=True)  # no format file: not a tracepoint
    assert tracepoint_exists("sock_send_length", tmp_path)
    assert not tracepoint_exists("tcp_probe", tmp_path)
    assert not tracepoint_exists("sock_recv_length", tmp_path)
