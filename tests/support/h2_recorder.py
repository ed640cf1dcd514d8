"""A recording TCP relay: real client -> relay -> real server, every chunk kept with its direction.

The relay forwards bytes unchanged and records each ``recv`` as one chunk, which stands in for one
syscall's Segment when tests replay a capture (``c2s`` chunks are EGRESS for the client's view and
INGRESS for the server's). Used to record tests/fixtures/http2/*.json from real grpcio, curl and
nginx traffic on loopback.

Fixture format (JSON): ``{"source": str, "chunks": [{"conn": int, "dir": "c2s"|"s2c",
"ts": ns since start, "hex": str}]}``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostagent.model import Direction, Segment
from hostagent.protocols.http2_frames import DATA, HEADERS, parse_header


@dataclass
class Chunk:
    conn: int
    dir: str  # "c2s" | "s2c"
    ts: int  # ns since the relay started
    data: bytes


@dataclass
class Recorder:
    """Listens on 127.0.0.1:listen_port and relays each connection to 127.0.0.1:upstream_port."""

    listen_port: int
    upstream_port: int
    chunks: list[Chunk] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _t0: int = field(default_factory=time.monotonic_ns)
    _threads: list[threading.Thread] = field(default_factory=list)
    _conns: int = 0
    _stopping: bool = False

    def start(self) -> Recorder:
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.listen_port))
        self._server.listen(64)
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                conn = self._conns
                self._conns += 1
            for src, dst, direction in ((client, upstream, "c2s"), (upstream, client, "s2c")):
                t = threading.Thread(target=self._pump, args=(conn, src, dst, direction), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, conn: int, src: socket.socket, dst: socket.socket, direction: str) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self._lock:
                self.chunks.append(Chunk(conn, direction, time.monotonic_ns() - self._t0, data))
            try:
                dst.sendall(data)
            except OSError:
                return

    def stop(self) -> None:
        self._stopping = True
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._server.close()

    def to_json(self, source: str) -> dict[str, Any]:
        with self._lock:
            chunks = list(self.chunks)
        return {
            "source": source,
            "chunks": [{"conn": c.conn, "dir": c.dir, "ts": c.ts, "hex": c.data.hex()} for c in chunks],
        }

    def save(self, path: Path, source: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(source), indent=1) + "\n")


def load_chunks(path: Path) -> list[Chunk]:
    doc = json.loads(path.read_text())
    return [Chunk(c["conn"], c["dir"], c["ts"], bytes.fromhex(c["hex"])) for c in doc["chunks"]]


def segments(chunks: list[Chunk], view: str) -> dict[int, list[Segment]]:
    """Chunks as the Segments one side would be handed, per connection. ``view`` "client":
    c2s bytes are EGRESS; "server": c2s bytes are INGRESS."""
    out: dict[int, list[Segment]] = {}
    for c in chunks:
        egress = (c.dir == "c2s") == (view == "client")
        direction = Direction.EGRESS if egress else Direction.INGRESS
        out.setdefault(c.conn, []).append(Segment(direction, c.data, len(c.data), c.ts))
    return out


def in_16k_frames(write: bytes, skip_headers: bool = False) -> bytes:
    """The same frames with each DATA frame cut into 16 KB ones, as Go's and nginx's HTTP/2 send
    them (grpcio sends a message as one frame); ``skip_headers``: without the leading HEADERS
    (Go writes a response's HEADERS apart)."""
    out, pos = b"", 0
    while pos < len(write):
        length, ftype, flags, sid = parse_header(write, pos)
        payload = write[pos + 9 : pos + 9 + length]
        pos += 9 + length
        if ftype == HEADERS and skip_headers and not out:
            continue
        if ftype != DATA:
            out += write[pos - 9 - length : pos]
            continue
        for at in range(0, length, 16384):
            part = payload[at : at + 16384]
            last = at + 16384 >= length
            out += len(part).to_bytes(3, "big") + bytes([DATA, flags if last else 0]) + sid.to_bytes(4, "big") + part
    return out
