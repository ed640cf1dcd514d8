"""systemd notifications (sd_notify) and the watchdog, a no-op when not under systemd.

READY=1 is sent only once the probes are attached; WATCHDOG=1 only while the pipeline's poll loop
keeps beating, so a wedged agent is restarted by systemd rather than pinging from a healthy thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier()
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *lines: str) -> None:
        if self.enabled:
            self._notifier.notify("\n".join(lines))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1; older ones ignore it.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")


def watchdog_interval_s() -> float | None:
    """Half of WATCHDOG_USEC when systemd asked for a watchdog for this very process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2_000_000


class Watchdog(threading.Thread):
    """Pings WATCHDOG=1 every interval while ``alive()`` says the pipeline is healthy."""

    def __init__(self, notifier: Notifier, interval_s: float, alive: Callable[[], bool]) -> None:
        super().__init__(name="watchdog", daemon=True)
        self._notifier, self._interval, self._alive = notifier, interval_s, alive
        self._stop = threading.Event()
        self.missed = 0

    def run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._alive():
                self._notifier.send("WATCHDOG=1")
            else:
                self.missed += 1
                log.error("pipeline stalled: not pinging the watchdog (systemd will restart the agent)")

    def stop(self) -> None:
        self._stop.set()
