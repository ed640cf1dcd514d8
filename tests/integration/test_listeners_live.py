"""The listener map on this machine's kernel: LISTEN sockets from sock_diag netlink, which lists
exactly what /proc/net/tcp{,6} does, and the pid that holds each one."""

from __future__ import annotations

import os
import socket

from hostagent.identity.listeners import ListenerMap
from hostagent.identity.proc_net import parse_listening
from hostagent.identity.procfs import ProcFS
from hostagent.identity.sock_diag import listening_sockets


def test_sock_diag_lists_what_proc_net_lists_and_the_map_finds_the_holder() -> None:
    v4 = socket.socket()
    v4.bind(("127.0.0.1", 0))
    v4.listen()
    v6 = socket.socket(socket.AF_INET6)
    v6.bind(("::1", 0))
    v6.listen()
    client = socket.create_connection(v4.getsockname())  # an established pair: not listed
    server, _ = v4.accept()
    try:
        procfs = ProcFS("/")
        from_text = parse_listening(procfs.net_file("tcp"))
        from_text.update(parse_listening(procfs.net_file("tcp6")))
        from_netlink = listening_sockets()
        assert from_netlink == from_text
        assert from_netlink[os.fstat(v4.fileno()).st_ino] == v4.getsockname()
        assert from_netlink[os.fstat(v6.fileno()).st_ino] == v6.getsockname()[:2]

        listeners = ListenerMap(procfs)
        listeners.refresh()
        assert listeners._listening == listeners._from_sock_diag  # not the /proc/net fallback
        assert listeners.pid_for(*v4.getsockname()) == os.getpid()
        assert listeners.pid_for(*v6.getsockname()[:2]) == os.getpid()
        assert listeners.pid_for("127.0.0.1", client.getsockname()[1]) is None
    finally:
        for s in (client, server, v4, v6):
            s.close()



class WalkLog(ListenerMap):
    """The real map, noting the inodes each walk of every process's fds looked for (other
    engineers' or tests' new listeners may add walks of their own: counted per inode)."""

    walked_for: list[set[int]]

    def _scan_fds(self, wanted: set[int], launched: dict[int, int]) -> dict[int, int]:
        self.walked_for.append(set(wanted))
        return super()._scan_fds(wanted, launched)

    def walks_for(self, inode: int) -> int:
        return sum(inode in wanted for wanted in self.walked_for)


def test_a_listener_no_process_holds_costs_one_walk_and_a_miss_none() -> None:
    """A LISTEN socket whose fd is in flight in a unix socket (sent, not yet received) is held by
    no process: the kernel lists it, no walk of /proc finds it. It used to make every refresh walk
    every process's fds, those a miss for a client port asked for too. A listener that listen()
    bound itself (no LISTEN event: its port is picked at listen()) is still found after a miss."""
    left, right = socket.socketpair()
    in_flight = socket.socket()
    in_flight.bind(("127.0.0.1", 0))
    in_flight.listen()
    orphan = (os.fstat(in_flight.fileno()).st_ino, in_flight.getsockname()[1])
    socket.send_fds(left, [b"x"], [in_flight.fileno()])
    in_flight.close()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    try:
        listeners = WalkLog(ProcFS("/"), min_gap=0.0)
        listeners.walked_for = []
        listeners.refresh()
        assert (listeners.walks_for(orphan[0]), listeners.pid_for("127.0.0.1", orphan[1])) == (1, None)
        assert listeners.pid_for(*server.getsockname()) == os.getpid()
        for _ in range(3):  # misses for a client's port: a refresh each, no walk for the orphan
            assert listeners.pid_for("127.0.0.1", client.getsockname()[1]) is None
            assert listeners._wake.is_set()
            listeners._asked.clear()
            listeners._wake.clear()
            listeners.refresh()
        assert listeners.walks_for(orphan[0]) == 1
        autobound = socket.socket()
        autobound.listen()  # no bind(): the port is picked here, the kernel reports no LISTEN event
        try:
            assert listeners.pid_for(*autobound.getsockname()) is None
            listeners.refresh()
            assert listeners.pid_for(*autobound.getsockname()) == os.getpid()
            assert (listeners.walks_for(os.fstat(autobound.fileno()).st_ino), listeners.walks_for(orphan[0])) == (1, 1)
        finally:
            autobound.close()
    finally:
        for s in (client, server, left, right):
            s.close()
