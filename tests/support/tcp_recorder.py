"""A recording TCP relay: sits between a real client and a real server on loopback and keeps
every chunk each side wrote, in the order the relay saw them.

Parser fixtures are made from these recordings, so the bytes are exactly what the real
servers and clients put on the wire (no hand-written protocol bytes). Each ``recv`` result is
one chunk, which keeps the natural message grouping of the peers (a pipeline of 100 Redis
commands arrives as a few big chunks, a psql query as one).

Recording format (JSON), stable because tests load it::

    {"name": "...", "note": "...", "chunks": [["c", "<hex>"], ["s", "<hex>"], ...]}

``"c"`` = written by the client, ``"s"`` = written by the server.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
from pathlib import Path

HOST = "127.0.0.1"


class Recorder:
    """Listen on ``listen_port``; relay each accepted connection to ``server_port``.

    Every connection is recorded separately (``connections``); most recordings use one.
    """

    def __init__(self, listen_port: int, server_port: int) -> None:
        self.listen_port = listen_port
        self.server_port = server_port
        self.connections: list[list[tuple[str, bytes]]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, listen_port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            chunks: list[tuple[str, bytes]] = []
            with self._lock:
                self.connections.append(chunks)
            thread = threading.Thread(target=self._relay, args=(client, chunks), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, client: socket.socket, chunks: list[tuple[str, bytes]]) -> None:
        server = socket.create_connection((HOST, self.server_port))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, ("c", server))
        sel.register(server, selectors.EVENT_READ, ("s", client))
        open_sides = 2
        try:
            while open_sides and not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    side, other = key.data
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data = sock.recv(65536)
                    if not data:
                        sel.unregister(sock)
                        open_sides -= 1
                        try:
                            other.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    with self._lock:
                        chunks.append((side, data))
                    other.sendall(data)
        finally:
            sel.close()
            client.close()
            server.close()

    def close(self) -> None:
        self._stop.set()
        self._accept_thread.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()

    def save(self, path: Path, name: str, note: str, index: int = 0) -> None:
        """Write connection ``index`` as a JSON recording."""
        with self._lock:
            chunks = [[side, data.hex()] for side, data in self.connections[index]]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"name": name, "note": note, "chunks": chunks}, indent=1) + "\n")


def load(path: Path) -> list[tuple[str, bytes]]:
    """Read a recording back as ``[(side, bytes), ...]``."""
    doc = json.loads(path.read_text())
    return [(side, bytes.fromhex(hexdata)) for side, hexdata in doc["chunks"]]
