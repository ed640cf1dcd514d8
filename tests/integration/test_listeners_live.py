"""The listener map on this machine's kernel: LISTEN sockets from sock_diag netlink, which lists
exactly what /proc/net/tcp{,6} does, and the pid that holds each one."""

from __future__ import annotations

import os
import socket

from hostagent.identity.listeners import ListenerMap, parse_listening
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
