"""What sits between the pipeline and the export queue, and the receiver beside it.

    Pipeline --(call, span)--> LocalLinker --> SdkLayer (only with a receiver) --> export queue
    SDKs --OTLP--> GrpcReceiver / HttpReceiver --> SdkLayer --> redaction --> RawForwarder

``Layering.offer`` is what the pipeline calls instead of the queue: the linker's own ``offer`` (an
attribute, not a method that forwards: that was an interpreted call per span). One timer thread
sweeps both holds every ``SWEEP_S``. ``stop()`` (before the export queue shuts down) stops the receivers,
emits and forwards everything still held, then drains the forwarder.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable, Optional

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan

from hostagent.config import Config
from hostagent.model import Call
from hostagent.pipeline import SpanOnly
from hostagent.traces.enrich import SdkLayer, redact_request
from hostagent.traces.linking import Gate, LocalLinker

log = logging.getLogger(__name__)

# The holds it ends are 1.5 s (link_hold_ms, hold_ms): 0.1 s adds at most 7% to one that runs out. At
# 0.02 s its fifty wake-ups a second, nearly all with nothing to emit, cost ~0.7 us of CPU per span
# beside Flask at 1k req/s (bench/README, eighteenth round).
SWEEP_S = 0.1


def _endpoints(address: str, port: int) -> set[tuple[str, int]]:
    host = address.rpartition(":")[0].strip("[]")
    # Events give IPv4-mapped peers in their IPv4 form (hostagent.probes.events), so no ::ffff: here.
    if host in ("0.0.0.0", "", "::"):
        return {("127.0.0.1", port), ("::1", port)}
    return {(host, port)}


class Layering:
    def __init__(self, config: Config, enqueue: Callable[[ReadableSpan], Any],
                 redactor: Callable[[], Any], pii: Optional[Any] = None) -> None:
        rc = config.receiver
        self.receivers: list[Any] = []
        self.forwarder: Any = None
        self.sdk: Optional[SdkLayer] = None
        self.intake: Any = None
        self._redactor, self._pii = redactor, pii
        self._sdk_spans = 0  # spans in the SDKs' trace requests, for status
        self._count_lock = threading.Lock()  # receiver threads count concurrently
        ignore: set[tuple[str, int]] = set()
        emit: Callable[[Call, ReadableSpan], None] = SpanOnly(enqueue)  # compiled, unlike a lambda here
        if rc.grpc or rc.http:
            from hostagent.receiver.forward import RawForwarder
            from hostagent.receiver.server import GrpcReceiver, HttpReceiver, Intake

            self.forwarder = RawForwarder(config.exporter)
            self.sdk = SdkLayer(emit, self._forward_traces, hold_s=rc.hold_ms / 1000,
                                sdk_wait_s=max(rc.sdk_wait_ms, rc.hold_ms) / 1000,
                                max_held_spans=rc.max_held_spans, max_held_bytes=rc.max_held_bytes)
            self.intake = Intake(self._on_sdk_request, self.forwarder.submit)
            if rc.grpc:
                grpc_receiver = GrpcReceiver(rc.grpc, self.intake)
                self.receivers.append(grpc_receiver)
                ignore |= _endpoints(rc.grpc, grpc_receiver.port)
            if rc.http:
                http_receiver = HttpReceiver(rc.http, self.intake)
                self.receivers.append(http_receiver)
                ignore |= _endpoints(rc.http, http_receiver.port)
            emit = self.sdk.offer
        self.linker = LocalLinker(emit, hold_s=config.capture.link_hold_ms / 1000,
                                  enabled=config.capture.link_traces, ignore_peers=ignore)
        # offer(call, span, pending=None): see the module docstring
        self.offer: Callable[..., None] = self.linker.offer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sweep, name="trace-linking", daemon=True)

    def set_gate(self, gate: Gate) -> None:
        self.linker.set_gate(gate)

    def _on_sdk_request(self, request: ExportTraceServiceRequest, size: int) -> None:
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._count_lock:
            self._sdk_spans += spans
        assert self.sdk is not None
        self.sdk.on_request(request, size)

    def _forward_traces(self, request: ExportTraceServiceRequest) -> None:
        redactor = self._redactor()
        if redactor is not None:
            counts = redact_request(request, redactor)
            if counts and self._pii is not None:
                self._pii.add(counts)
        assert self.forwarder is not None
        self.forwarder.submit("traces", request.SerializeToString())

    def start(self) -> Layering:
        if self.forwarder is not None:
            self.forwarder.start()
        for receiver in self.receivers:
            receiver.start()
            log.info("OTLP receiver listening on port %d (%s)", receiver.port, type(receiver).__name__)
        self._thread.start()
        return self

    def _sweep(self) -> None:
        while not self._stop.wait(SWEEP_S):
            try:
                self.linker.sweep()
                if self.sdk is not None:
                    self.sdk.sweep()
            except Exception:
                log.exception("trace linking sweep failed")

    def stop(self, timeout_s: float = 5.0) -> None:
        for receiver in self.receivers:
            receiver.stop()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.linker.flush_all()
        if self.sdk is not None:
            self.sdk.sweep(everything=True)
        if self.forwarder is not None:
            self.forwarder.stop(timeout_s)

    def counters(self) -> dict[str, int]:
        out: Counter[str] = Counter(self.linker.counters)
        for part in (self.sdk, self.intake, self.forwarder):
            if part is not None:
                out.update(part.counters)
        if self.sdk is not None:
            out["sdk_spans_received"] = self._sdk_spans
        return dict(out)

    def held(self) -> dict[str, int]:
        """Spans waiting now: the SDKs' (for the agent's match) and the agent's (for an SDK span
        or a local parent). Gauges, not counters: status shows them beside the counters."""
        sdk = self.sdk.held if self.sdk is not None else {}
        return {"sdk_spans": sdk.get("sdk_spans", 0), "agent_spans": sdk.get("agent_spans", 0) + self.linker.held}
