"""hostagent.probes.missed: which sockets closed while close() was detached, over a fixture /proc tree."""

from __future__ import annotations

import socket
from pathlib import Path

from hostagent.model import EventKind
from hostagent.probes import events as ev
from hostagent.probes.missed import close_record, missed_closes
from tests.unit.test_kernel_seed import make_proc

LO = bytes([127, 0, 0, 1])


def entry(local_port: int, peer_port: int, *, ts: int = 100, gen: int = 7, id_fd: int = 0) -> ev.SockInfo:
    info = ev.SockInfo(gen=gen, ts=ts, family=socket.AF_INET, sock_type=socket.SOCK_STREAM,
                       local_port=local_port, peer_port=peer_port, id_fd=id_fd)  # fmt: skip
    info.peer_addr[:4] = list(LO)
    info.local_addr[:4] = list(LO)
    return info


def test_a_socket_whose_fd_is_gone_or_another_file_or_another_socket_had_its_close_missed(tmp_path: Path) -> None:
    # /proc (test_kernel_seed.make_proc): pid 100 has the listener on 18100 at fd 3, its accepted
    # connection (peer 49634) at fd 4, a Unix socket at 5, a file at 6; pid 200 a v6 connection at 7.
    make_proc(tmp_path)
    entries = [
        (100, 3, entry(18100, 0)),  # the listener, still open
        (100, 4, entry(18100, 49634)),  # the accepted connection, still open
        (100, 5, entry(18100, 40000)),  # closed; the number now a Unix socket's
        (100, 6, entry(18100, 40001)),  # closed; the number now a file's
        (100, 9, entry(18100, 40002)),  # closed; the number unused
        (200, 8, entry(53, 0)),  # open: a UDP socket, its port agrees
        (200, 7, entry(8080, 1111)),  # the number now another connection's (peer 54321)
        (100, 10, entry(18100, 40003, gen=ev.CLOSED_GEN)),  # closed while the program saw it
        (100, 11, entry(18100, 40004, ts=500)),  # made after the re-attach: the program saw its fd
        (400, 3, entry(18100, 40005)),  # a process that exited: its exit ends its entries
        (300, 3, entry(18100, 49634)),  # the agent's own
    ]
    got = missed_closes(entries, 200, tmp_path, skip_pid=300)
    assert [(pid, fd) for pid, fd, _ in got] == [(100, 5), (100, 6), (100, 9), (200, 7)]
    assert missed_closes([], 200, tmp_path) == []


def test_the_close_record_is_the_one_the_program_would_have_emitted() -> None:
    rec = close_record(100, entry(18100, 49634, id_fd=4), 12345)
    e = ev.decode(rec, len(rec))
    assert (e.kind, e.pid, e.tid, e.fd, e.ts_ns, e.size, e.data) == (EventKind.CLOSE, 100, 100, 4, 12345, 0, b"")
    assert (e.family, e.peer_addr, e.peer_port, e.local_addr, e.local_port) == (
        socket.AF_INET, "127.0.0.1", 49634, "127.0.0.1", 18100)
    assert ev.header(rec).syscall == ev.SYSCALL_OPS.index("close")
