"""bcc's compile of bpf/capture.c on a thread of its own, while the daemon builds the rest.

``BPF(text=...)`` is one ctypes call into clang/LLVM that holds no GIL for its whole length
(seconds), so the exporters, identity, the OTLP receiver and the admin server are built on the
main thread in the meantime, on the other core. Whatever the thread raises is raised again,
the same exception object, in the thread that asks for the result: a compile failure ends the
start exactly as it did when the compile ran on the main thread (same message, same exit status).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from hostagent.config import Config
from hostagent.probes.loader import BpfCapture


def not_started(event: Any) -> None:
    """The capture's on_event until the pipeline exists (the ring is only polled after that)."""
    raise RuntimeError("an event arrived before the pipeline was built")


class BackgroundCompile:
    """Runs ``capture.load()`` on a thread; ``result()`` waits for it in the caller's thread.

    ``after`` runs on the same thread once the compile succeeded (the daemon hands back the
    memory LLVM freed there, before the main thread needs the second core again).
    """

    def __init__(self, capture: BpfCapture, after: Optional[Callable[[], Any]] = None) -> None:
        self.capture = capture
        self._after = after
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="bpf-compile", daemon=True)
        self.started_at = 0.0
        self.finished_at = 0.0

    def start(self) -> BackgroundCompile:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.capture.load()
            if self._after is not None:
                self._after()
        except BaseException as exc:  # handed to result(): the main thread decides what it means
            self._error = exc
        finally:
            self.finished_at = time.monotonic()

    @property
    def done(self) -> bool:
        return self.started_at > 0 and not self._thread.is_alive()

    def result(self) -> BpfCapture:
        """The loaded capture, once the compile is over; the compile's own exception if it failed."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self.capture

    def wait(self) -> None:
        """Until the thread is over (shutdown paths: never leave LLVM running while Python exits)."""
        if self.started_at:
            self._thread.join()


def begin_compile(config: Config, after: Optional[Callable[[], Any]] = None) -> BackgroundCompile:
    """The BPF side for this config, compiling from now on (call after prepare_kernel: the
    headers it chose are in BCC_KERNEL_SOURCE). Its on_event is the pipeline's, set later."""
    capture = BpfCapture(
        on_event=not_started,
        payload_bytes=config.probes.payload_bytes,
        ring_bytes=config.probes.ring_buffer_mib << 20,
        data_hooks=config.probes.data_hooks,
        configured_headers=config.agent.kernel_headers or None,
        runtime_dir=Path(config.agent.runtime_dir),
        self_tgid=os.getpid(),
    )
    return BackgroundCompile(capture, after).start()
