"""Starts bench.otlp_sink as a separate (optionally pinned) process and reads its span count."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.procs import pinned, stop
from tests.support.servers import wait_port

REPO = Path(__file__).resolve().parents[1]
SHM = Path("/dev/shm")


def count_dir(workdir: Path) -> Path:
    """A new directory for the sink's count file, in memory (tmpfs) where the host has /dev/shm.
    The sink replaces the file (write, rename) after every export; on ext4 a rename over an
    existing file starts the new file's write-back at once (auto_da_alloc), a disk write per
    export: 0.1-0.2 ms of the sink's CPU per export on this VM, a block request and its VM exit on the load
    generator's CPU."""
    base = SHM if SHM.is_dir() else workdir
    return Path(tempfile.mkdtemp(prefix="otlp-sink-", dir=base))


class Sink:
    def __init__(self, workdir: Path, port: int, cpus: Optional[str] = None, server_port: int = 0) -> None:
        self.port = port
        self._dir = count_dir(workdir)
        self.count_file = self._dir / f"sink-{port}.count"
        self.proc = subprocess.Popen(
            pinned([sys.executable, "-m", "bench.otlp_sink", "--port", str(port), "--count-file",
                    str(self.count_file), "--server-port", str(server_port)], cpus),
            cwd=REPO, stdout=subprocess.DEVNULL)
        wait_port(port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> int:
        try:
            return int(self.count_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def settle(self, quiet_s: float = 0.3, timeout: float = 30.0) -> int:
        """Wait until the count has not moved for ``quiet_s``; returns it. Called once the process
        that exported has exited (the agent after its final flush, gunicorn after the SDK's): what
        it sent is in already, and the count is written before each export is answered, so only an
        export the sender gave up on (counted by the agent as a drop) can still move it, within
        the sink's ~2 ms per request."""
        last, since = self.spans(), time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.spans()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                break
        return last

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self._dir, ignore_errors=True)
