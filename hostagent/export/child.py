"""The OTLP/gRPC span export process: encoded batches in, one result per batch out.

Run by ``hostagent.export.process.ChildExporter`` as ``python -m hostagent.export.child FD``: FD is
its end of a socketpair. It sends with the SDK's OTLP/gRPC exporter exactly as the agent does in
process (channel, TLS, headers, compression, timeout, retries with backoff on retryable codes);
only the encode stays with the agent (``otlp_fast``), which hands over ExportTraceServiceRequest
bytes. One batch at a time: the agent waits for each result, so its export queue keeps every count.

Its life is the agent's: PR_SET_PDEATHSIG, and EOF on the socket, end it. SIGTERM and SIGINT are
ignored (systemd signals the whole unit's cgroup at stop, a terminal's ^C the process group): the
agent flushes to it first and then says EXIT. It imports only what the send needs (bench/README,
twenty-first round: its RSS).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

from hostagent.export.wire import BATCH, CONFIG, EXIT, READY, RESULT, read_frame, write_frame

PR_SET_PDEATHSIG = 1


class Encoded:
    """A batch as the SDK exporter's ``export`` takes it: ``len`` is the span count (its own
    metrics), ``payload`` the request bytes."""

    __slots__ = ("count", "payload")

    def __init__(self, payload: bytes, count: int) -> None:
        self.payload, self.count = payload, count

    def __len__(self) -> int:
        return self.count


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the agent died before the prctl: nothing will tell us later
        os._exit(0)


def _exporter(settings: dict[str, Any]) -> Any:
    from hostagent.export.otlp import make_otlp_exporter

    return make_otlp_exporter(**settings, encoded=True)


def serve(sock: socket.socket) -> int:
    exporter: Any = None
    try:
        while True:
            frame = read_frame(sock)
            if frame is None or frame[0] == EXIT:
                return 0
            kind, count, payload = frame
            if kind == CONFIG:
                if exporter is not None:
                    exporter.shutdown()
                    exporter = None
                try:
                    exporter = _exporter(json.loads(payload))
                    write_frame(sock, READY, 1)
                except Exception as exc:
                    write_frame(sock, READY, 0, repr(exc).encode())
                continue
            if kind != BATCH:
                continue
            if exporter is None:
                ok, error = False, "no exporter configured"
            else:
                try:
                    result = exporter.export(Encoded(payload, count))
                    ok, error = result.name == "SUCCESS", "" if result.name == "SUCCESS" else result.name
                except Exception as exc:  # reported, as the in-process exporter's exception would be
                    ok, error = False, repr(exc)
            write_frame(sock, RESULT, 1 if ok else 0, error.encode())
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        if exporter is not None:
            exporter.shutdown(timeout_millis=1000)


def main(argv: list[str]) -> int:
    fd, parent = int(argv[1]), int(argv[2])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent(parent)  # its priority: the agent's (it forked from the agent's thread; then
    # hostagent.priority.follow makes it take the agent's changes)
    sock = socket.socket(fileno=fd)
    return serve(sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
