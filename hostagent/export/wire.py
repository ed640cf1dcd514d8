"""The frames between the agent and its export process (hostagent.export.child), on a socketpair.

Each frame: payload length (u32), kind (u8), count (u32), payload. Agent -> child: CONFIG (the
exporter settings as JSON), BATCH (count = spans, payload = an encoded ExportTraceServiceRequest),
EXIT. Child -> agent: READY (after each CONFIG: count = 1 with its exporter built, 0 and the reason when
not), RESULT (count = 1 delivered / 0 failed, payload = the reason).
"""

from __future__ import annotations

import socket
import struct
from typing import Optional

CONFIG, BATCH, EXIT, RESULT, READY = 1, 2, 3, 4, 5
_HEADER = struct.Struct("<IBI")


def write_frame(sock: socket.socket, kind: int, count: int, payload: bytes = b"") -> None:
    sock.sendall(_HEADER.pack(len(payload), kind, count) + payload)


def _exactly(sock: socket.socket, n: int) -> Optional[bytes]:
    parts: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_frame(sock: socket.socket) -> Optional[tuple[int, int, bytes]]:
    """(kind, count, payload), or None at EOF."""
    head = _exactly(sock, _HEADER.size)
    if head is None:
        return None
    size, kind, count = _HEADER.unpack(head)
    payload = _exactly(sock, size) if size else b""
    if payload is None:
        return None
    return kind, count, payload
