"""Trace-consistent sampling: the same trace id gives the same decision here and in SDKs.

The ratio decision is OpenTelemetry's TraceIdRatioBased (sdk/trace/sampling.py, and the spec's
"TraceIdRatioBased" sampler): keep when the trace id's low 64 bits are below
``round(ratio * 2**64)``. SDKs configured with the same ratio therefore keep exactly the traces
the agent keeps. On top of it, as OpenTelemetry's ParentBased does, a call that carried a
``traceparent`` follows its sampled flag, so the agent never cuts a trace an SDK decided to keep,
and a call linked under a local parent (hostagent.traces.linking) follows that parent's decision
(``Pending``): per-service and per-protocol ratios therefore apply to the roots of local traces.

The agent sees whole calls (request and response) before it exports them, so two tail rules can
override everything else: keep errors, keep calls slower than a threshold.

Which ratio applies: a per-service override, else a per-protocol override, else the global ratio
(the most specific wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from hostagent.settings import SamplingSettings

TRACE_ID_LIMIT = (1 << 64) - 1
# Call.protocol values (hostagent/model.py); per-protocol overrides are keyed by these.
KNOWN_PROTOCOLS = ("http", "http2", "grpc", "postgresql", "mysql", "redis", "dns")
# Probe names that differ from the protocol names spans carry: wherever a protocol is asked for
# (hostagentctl's --protocol, the admin API's protocol fields) a probe's name stands for its
# protocol's, so `probes enable postgres` then `tail --protocol postgres` works, from the CLI and
# from any other API client alike.
PROTOCOL_ALIASES = {"postgres": "postgresql"}


def protocol_name(value: str) -> str:
    """The protocol a name given for one stands for: a probe's name -> its protocol's."""
    return PROTOCOL_ALIASES.get(value, value)


def ratio_bound(ratio: float) -> int:
    """The trace-id bound for ``ratio``, computed exactly as OpenTelemetry's SDK does."""
    return round(ratio * (TRACE_ID_LIMIT + 1))


def trace_id_ratio_sampled(trace_id: int, ratio: float) -> bool:
    """TraceIdRatioBased's decision for one trace id (128-bit int)."""
    return trace_id & TRACE_ID_LIMIT < ratio_bound(ratio)


def validate_ratio(ratio: float, what: str = "ratio") -> None:
    """Raise ValueError unless 0 <= ratio <= 1 (NaN included in the refusal)."""
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{what} must be between 0 and 1, got {ratio!r}")


@dataclass(frozen=True)
class Decision:
    sampled: bool
    # Why: "error", "slow", "parent", "service:<name>", "protocol:<name>" or "ratio".
    reason: str


class Sampler:
    """Decides per call; built once per SamplingSettings (use ``sampler_for``)."""

    def __init__(self, settings: SamplingSettings) -> None:
        validate_ratio(settings.ratio)
        for name, ratio in settings.per_service + settings.per_protocol:
            validate_ratio(ratio, f"override {name!r}")
        self.settings = settings
        self._global = ratio_bound(settings.ratio)
        self._service = {name: ratio_bound(r) for name, r in settings.per_service}
        self._protocol = {name: ratio_bound(r) for name, r in settings.per_protocol}
        slow = settings.keep_slower_than_ms
        self._slow_ns: Optional[int] = None if slow is None or slow <= 0 else int(slow * 1_000_000)

    def head(
        self,
        trace_id: int,
        *,
        parent_sampled: Optional[bool] = None,
        service: Optional[str] = None,
        protocol: Optional[str] = None,
    ) -> Decision:
        """The decision knowable before the response: parent flag, else trace-id ratio."""
        if parent_sampled is not None:
            return Decision(parent_sampled, "parent")
        if service is not None and service in self._service:
            bound, reason = self._service[service], f"service:{service}"
        elif protocol is not None and protocol in self._protocol:
            bound, reason = self._protocol[protocol], f"protocol:{protocol}"
        else:
            bound, reason = self._global, "ratio"
        return Decision(trace_id & TRACE_ID_LIMIT < bound, reason)

    def decide(
        self,
        trace_id: int,
        *,
        parent_sampled: Optional[bool] = None,
        service: Optional[str] = None,
        protocol: Optional[str] = None,
        is_error: bool = False,
        duration_ns: int = 0,
    ) -> Decision:
        """The full decision for a finished call: tail rules first, then ``head``."""
        if is_error and self.settings.keep_errors:
            return Decision(True, "error")
        if self._slow_ns is not None and duration_ns >= self._slow_ns:
            return Decision(True, "slow")
        return self.head(trace_id, parent_sampled=parent_sampled, service=service, protocol=protocol)

    @property
    def may_drop(self) -> bool:
        """False when every call is kept whatever its trace id (lets callers skip the work)."""
        s = self.settings
        everything = (s.ratio, *(r for _, r in s.per_service), *(r for _, r in s.per_protocol))
        return any(r < 1.0 for r in everything)


class Pending:
    """One call's sampling inputs, decided once its trace is final.

    Trace linking moves a server span into its local client's trace after the span is built, so a
    decision taken on the span's own trace id would cut linked traces in two (each end kept or
    dropped on its own id). The linker decides instead, root first: a span that carried a
    ``traceparent`` follows its flag; a span linked under a local parent follows that parent's
    decision (ParentBased, as an SDK child would); a root decides by the ratio on its trace id.
    The tail rules (errors, slow calls) still keep a call whatever its trace's decision."""

    __slots__ = ("duration_ns", "is_error", "protocol", "sampler", "service", "wire_parent_sampled")

    def __init__(self, sampler: Sampler, *, service: Optional[str], protocol: Optional[str], is_error: bool,
                 duration_ns: int, wire_parent_sampled: Optional[bool]) -> None:
        self.sampler, self.service, self.protocol = sampler, service, protocol
        self.is_error, self.duration_ns, self.wire_parent_sampled = is_error, duration_ns, wire_parent_sampled

    def decide(self, trace_id: int, local_parent_kept: Optional[bool] = None) -> Decision:
        parent = self.wire_parent_sampled if self.wire_parent_sampled is not None else local_parent_kept
        return self.sampler.decide(trace_id, parent_sampled=parent, service=self.service, protocol=self.protocol,
                                   is_error=self.is_error, duration_ns=self.duration_ns)


@lru_cache(maxsize=8)
def sampler_for(settings: SamplingSettings) -> Sampler:
    """The Sampler of one settings snapshot (frozen, hashable), built once."""
    return Sampler(settings)


def parent_sampled_from_flags(flags: Optional[int]) -> Optional[bool]:
    """The W3C trace-flags sampled bit, or None when there was no traceparent."""
    return None if flags is None else bool(flags & 0x01)
