"""ChildExporter: the OTLP/gRPC send in a process of its own (hostagent.export.child).

Why: at ~40k spans/s the agent's poll thread shared the one GIL and its CPU with the export
thread (the SDK exporter's Python and gRPC's call); the child has its own GIL and its own place in
the scheduler (bench/README, thirteenth and twenty-first rounds). What stays here: the encode
(otlp_fast, compiled), on the export queue's worker thread, which then waits on the socket (the
GIL released) for the child's result. One batch at a time, so ``ExportQueue`` keeps its bound, its
retries and every count (export_queue_full, export_failed, ...) as with the in-process exporter.

Failures: a child that dies (or hangs past the exporter's timeout) holding a batch is killed,
restarted, and that batch raises ``ExportLost``: counted as export_failed, not retried (it may have
been sent). More than ``MAX_RESTARTS`` restarts in ``RESTART_WINDOW_S``, or a child that cannot be
started, and the export goes on in process (``fallback``), said once in the log.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Optional

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from hostagent.export.otlp_fast import OtlpTraceEncoder
from hostagent.export.queue import ExportLost
from hostagent.export.wire import BATCH, CONFIG, EXIT, READY, read_frame, write_frame
from hostagent.yielding import CpuYield

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
START_WAIT_S = 30.0  # for a new child's READY (its imports, on a loaded host)
EXIT_WAIT_S = 3.0  # for the child to shut its channel down after EXIT (the agent's stop budget)


class ChildExporter(SpanExporter):
    def __init__(self, settings: dict[str, Any], fallback: SpanExporter, *,
                 timeout_s: float = 10.0) -> None:
        self._settings = dict(settings)
        self._in_process_exporter = fallback  # built from the same settings (their errors raised at start)
        self._timeout_s = timeout_s
        self._encoder = OtlpTraceEncoder(pause=CpuYield())
        self._lock = threading.Lock()  # one batch at a time; shutdown/reconfigure wait for it
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._sock: Optional[socket.socket] = None
        self._fallback: Optional[SpanExporter] = None
        self._deaths: deque[float] = deque()
        self._closing = False
        self._ready = False  # the child answered READY to its last CONFIG
        self.restarts = 0  # children started again after one died or hung
        self.lost_spans = 0  # spans held by a child that died (in export_failed too)
        self.fallback_reason = ""
        self.on_child: list[Callable[[int], None]] = []  # told each new child's pid

    # -- the child -----------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> ChildExporter:
        """Start the child now (after the config, before READY); on failure export in process."""
        with self._lock:
            self._spawn_or_fall_back()
        return self

    def _spawn(self) -> None:
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends: the first child is
        # the main thread's, a restarted one the export queue's worker's, which ends only after the
        # queue's last batch (the child then holds nothing; EXIT would have ended it anyway).
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            cmd = [sys.executable, "-m", "hostagent.export.child", str(theirs.fileno()), str(os.getpid())]
            self._proc = subprocess.Popen(cmd, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine
        self._ready = False
        write_frame(mine, CONFIG, 0, json.dumps(self._settings).encode())
        log.info("span export: OTLP/gRPC sent by process %d", self._proc.pid)
        for tell in self.on_child:
            tell(self._proc.pid)

    def _spawn_or_fall_back(self) -> bool:
        if self._fallback is not None:
            return False
        try:
            self._spawn()
            return True
        except OSError as exc:
            self._fall_back(f"the export process cannot start ({exc})")
            return False

    def _fall_back(self, why: str) -> None:
        self._stop_child(kill=True)
        self.fallback_reason = why
        self._fallback = self._in_process_exporter
        log.error("span export: %s; exporting in process from now on", why)

    def _stop_child(self, kill: bool) -> Optional[int]:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            if not kill:
                try:
                    write_frame(sock, EXIT, 0)
                except OSError:
                    pass
            sock.close()
        if proc is None:
            return None
        if not kill:
            try:
                return proc.wait(EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        proc.kill()
        return proc.wait()

    def _died(self, held: int, why: str) -> None:
        proc = self._proc
        pid = proc.pid if proc is not None else 0
        status = self._stop_child(kill=True)
        self.lost_spans += held
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > RESTART_WINDOW_S:
            self._deaths.popleft()
        log.warning("span export: process %d %s (exit status %s)%s", pid, why, status,
                    f" holding {held} spans (counted as export_failed)" if held else "")
        if self._closing:
            return
        if len(self._deaths) > MAX_RESTARTS:
            self._fall_back(f"the export process died {len(self._deaths)} times in {RESTART_WINDOW_S:.0f} s")
        elif self._spawn_or_fall_back():
            self.restarts += 1

    # -- the exporter contract -----------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._fallback is not None:
                return self._fallback.export(spans)
            if self._closing:
                return SpanExportResult.FAILURE
            proc = self._proc
            if self._ready and proc is not None and proc.poll() is not None:
                self._died(0, "exited between batches")  # held nothing: nothing lost
            if self._sock is None and not self._spawn_or_fall_back():
                return self._in_process(spans)
            if not self._ready and not self._await_ready():
                return self._in_process(spans)
            payload = self._encoder.encode(spans)
            sock = self._sock
            assert sock is not None
            try:
                write_frame(sock, BATCH, len(spans), payload)
            except OSError as exc:  # not taken: the queue's retry goes to the next child
                self._died(0, f"refused the batch ({exc})")
                return SpanExportResult.FAILURE
            frame = None
            try:
                # the SDK exporter's own retries end within its timeout (plus a last backoff)
                sock.settimeout(self._timeout_s + 5.0)
                frame = read_frame(sock)
                why = "exited"
            except TimeoutError:
                why = f"did not answer in {self._timeout_s + 5.0:.0f} s"
            except OSError as exc:
                why = f"failed ({exc})"
            if frame is None:
                self._died(len(spans), why)
                raise ExportLost(f"the export process {why} holding {len(spans)} spans")
            _, ok, reason = frame
            if not ok:
                log.debug("span export process: batch of %d failed: %s", len(spans), reason.decode(errors="replace"))
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _in_process(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._fallback.export(spans) if self._fallback is not None else SpanExportResult.FAILURE

    def _await_ready(self) -> bool:
        """The child's answer to its CONFIG. A child that never says READY has sent nothing: it
        "cannot start", and the export goes on in process (no batch lost)."""
        sock = self._sock
        assert sock is not None
        try:
            sock.settimeout(START_WAIT_S)
            frame = read_frame(sock)
        except OSError as exc:
            frame, why = None, str(exc)
        else:
            why = "it exited" if frame is None else ""
        if frame is not None and frame[0] == READY and frame[1]:
            self._ready = True
            return True
        if frame is not None:
            why = f"its exporter: {frame[2].decode(errors='replace')}"
        self._fall_back(f"the export process cannot start ({why})")
        return False

    def reconfigure(self, settings: dict[str, Any], fallback: SpanExporter) -> None:
        """New exporter settings (reload): the child builds its exporter again, between batches."""
        with self._lock:
            self._settings = dict(settings)
            self._in_process_exporter.shutdown()
            self._in_process_exporter = fallback
            if self._fallback is not None:
                self._fallback = fallback
            elif self._sock is not None:
                try:
                    write_frame(self._sock, CONFIG, 0, json.dumps(self._settings).encode())
                    self._ready = False
                except OSError:
                    pass  # the next batch finds it dead, and the new child takes the new settings

    def shutdown(self) -> None:
        """After the queue's last batch: EXIT, and the child ends its channel. With a batch still in
        flight (the stop's time is up) the child is killed, and that batch counted lost."""
        self._closing = True
        if self._lock.acquire(timeout=0.1):
            try:
                self._stop_child(kill=False)
            finally:
                self._lock.release()
        else:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()  # export() sees EOF and ends
        self._in_process_exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
