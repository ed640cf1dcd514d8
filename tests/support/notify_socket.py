"""A datagram socket that stands where systemd's NOTIFY_SOCKET would, recording each message."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._lock:
                self.messages.extend(data.decode().splitlines())

    def lines(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, line: str, timeout: float = 60.0, after: int = 0) -> int:
        """Index of the first message equal to (or starting with, for KEY=) ``line`` after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, msg in enumerate(self.lines()[after:], start=after):
                if msg == line or (line.endswith("=") and msg.startswith(line)):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {line!r} on NOTIFY_SOCKET within {timeout}s; got {self.lines()}")

    def close(self) -> None:
        self._closed = True
        self.sock.close()
