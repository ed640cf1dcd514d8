"""The test suite's port helpers (tests/support): two runs on one host, and a run repeated within
TIME_WAIT's minute, must not take or refuse each other's ports wrongly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import ports
from tests.support.servers import assert_port_free


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", ports.free_port()))
    s.listen()
    yield s
    s.close()


def test_a_listening_port_is_busy(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with pytest.raises(AssertionError, match=f"127.0.0.1:{port} is already in use"):
        assert_port_free(port)
    assert not ports.listen_free(port)


def test_a_port_in_time_wait_is_free(listener: socket.socket) -> None:
    """The server end closes first, as an HTTP server does: its port's connection stays in
    TIME_WAIT for a minute, and a server started again on it binds (SO_REUSEADDR)."""
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    served, _ = listener.accept()
    served.close()
    client.recv(1)  # the server's FIN
    client.close()
    listener.close()
    assert_port_free(port)
    assert ports.listen_free(port)


def test_a_port_held_by_another_run_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    mine = ports.free_ports(3)
    # Let the third go: known free now. With free_ports(2) the third was left to chance, and in a
    # whole run another test of this process may hold it (seen in CI: the subprocess found none).
    os.close(ports._held.pop())
    other = subprocess.run(
        [sys.executable, "-c", f"from tests.support import ports; ports.FIRST, ports.LAST = {mine}, {mine + 2}; "
                               "print(ports.free_port())"],
        capture_output=True, text=True, check=True, cwd=ports.Path(__file__).parents[2],
    )  # fmt: skip
    assert int(other.stdout) == mine + 2  # the only one of the three this process does not hold
    monkeypatch.setattr(ports, "FIRST", mine)
    monkeypatch.setattr(ports, "LAST", mine + 2)
    assert ports.free_port() == mine + 2  # that run ended: its lock went with it
    with pytest.raises(AssertionError, match=f"no 1 consecutive free ports in {mine}-{mine + 2}"):
        ports.free_port()  # this process holds all three now
