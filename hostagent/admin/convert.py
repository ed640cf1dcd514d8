"""Settings and status dataclasses <-> admin API messages (one place, both directions)."""

from __future__ import annotations

from typing import Any

from hostagent.admin.state import capture_to_json
from hostagent.admin.status import AgentStatus, LayeringStatus
from hostagent.admin.tap import SpanSummary
from hostagent.admin.v1 import admin_pb2 as pb
from hostagent.policy.pii import DETECTOR_NAMES
from hostagent.settings import CaptureSettings, RedactionSettings, RuntimeSettings, SamplingSettings


def sampling_msg(s: SamplingSettings) -> pb.Sampling:
    msg = pb.Sampling(
        ratio=s.ratio,
        per_service=[pb.Override(name=n, ratio=r) for n, r in s.per_service],
        per_protocol=[pb.Override(name=n, ratio=r) for n, r in s.per_protocol],
        keep_errors=s.keep_errors,
    )
    if s.keep_slower_than_ms is not None:
        msg.keep_slower_than_ms = s.keep_slower_than_ms
    return msg


def redaction_msg(r: RedactionSettings) -> pb.Redaction:
    return pb.Redaction(
        pii_detection=r.pii_detection,
        mode=r.mode,
        rules=[pb.RedactionRule(name=x.name, pattern=x.pattern, mode=x.mode) for x in r.rules],
        detectors=list(DETECTOR_NAMES),
    )


def capture_msg(c: CaptureSettings) -> pb.Capture:
    overrides = []
    for o in c.overrides:
        msg = pb.CaptureOverride(service=o.service, protocol=o.protocol)
        if o.headers is not None:
            msg.headers = o.headers
        if o.bodies is not None:
            msg.bodies = o.bodies
        if o.body_max_bytes is not None:
            msg.body_max_bytes = o.body_max_bytes
        overrides.append(msg)
    return pb.Capture(headers=c.headers, bodies=c.bodies, body_max_bytes=c.body_max_bytes, raw_sql=c.raw_sql,
                      overrides=overrides)


def layering_msg(ls: LayeringStatus) -> pb.Layering:
    """The curated view of Layering.counters() (names from hostagent.traces.enrich/linking and
    hostagent.receiver), with every raw counter kept in ``counters``."""
    c = ls.counters
    return pb.Layering(
        receiver_enabled=ls.receiver_enabled,
        linking_enabled=ls.linking_enabled,
        sdk_requests_received=c.get("received_traces", 0),
        sdk_spans_received=c.get("sdk_spans_received", 0),
        # "late": the agent's span had already left, so the SDK span was enriched from its copy
        sdk_spans_enriched=c.get("sdk_spans_enriched", 0) + c.get("sdk_spans_late", 0),
        duplicates_dropped=c.get("agent_spans_deduplicated", 0),
        sdk_spans_held=ls.held_sdk_spans,
        agent_spans_held=ls.held_agent_spans,
        requests_forwarded=sum(v for k, v in c.items() if k.startswith("forwarded_")),
        hold_overflow=c.get("hold_overflow", 0) + c.get("sdk_hold_overflow", 0),
        thread_links=c.get("thread_links", 0),
        peer_links=c.get("peer_links", 0),
        counters={k: int(v) for k, v in c.items()},
    )


def probes_msg(settings: RuntimeSettings, names: tuple[str, ...], status: AgentStatus) -> list[pb.ProbeState]:
    known = {p.name: p for p in status.probes}
    out = []
    for name in names:
        st = known.get(name)
        out.append(
            pb.ProbeState(
                name=name,
                enabled=name in settings.probes,
                state=st.state if st else "unknown",
                reason=st.reason if st else "",
            )
        )
    return out


def status_msg(
    st: AgentStatus, settings: RuntimeSettings, names: tuple[str, ...], overrides: bool
) -> pb.GetStatusResponse:
    return pb.GetStatusResponse(
        version=st.version,
        uptime_seconds=st.uptime_seconds,
        kernel_release=st.kernel_release,
        kernel_headers=st.kernel_headers,
        probes=probes_msg(settings, names, st),
        events_per_second=st.events_per_second,
        spans_exported=st.spans_exported,
        drops={k: int(v) for k, v in st.drops.items()},
        exporter_endpoint=st.exporter_endpoint,
        exporter_last_error=st.exporter_last_error,
        sampling=sampling_msg(settings.sampling),
        redaction=redaction_msg(settings.redaction),
        redacted={k: int(v) for k, v in st.redacted.items()},
        settings_generation=settings.generation,
        healthy=st.healthy,
        runtime_overrides=overrides,
        capture=capture_msg(settings.capture),
        layering=layering_msg(st.layering),
        cpu_effort=st.cpu_effort,
        connections={k: int(v) for k, v in st.connections.items()},
    )


def span_msg(span: SpanSummary, dropped_before: int) -> pb.SpanSummary:
    return pb.SpanSummary(
        trace_id=span.trace_id,
        span_id=span.span_id,
        name=span.name,
        service=span.service,
        protocol=span.protocol,
        kind=span.kind,
        start_unix_nano=span.start_unix_nano,
        duration_ms=span.duration_ms,
        status=span.status,
        error_type=span.error_type,
        peer=span.peer,
        attributes=span.attributes,
        dropped_before=dropped_before,
    )


def sampling_summary(s: SamplingSettings) -> dict[str, Any]:
    """JSON-able form for audit lines."""
    return {
        "ratio": s.ratio,
        "per_service": dict(s.per_service),
        "per_protocol": dict(s.per_protocol),
        "keep_errors": s.keep_errors,
        "keep_slower_than_ms": s.keep_slower_than_ms,
    }


def redaction_summary(r: RedactionSettings) -> dict[str, Any]:
    return {
        "pii_detection": r.pii_detection,
        "mode": r.mode,
        "rules": [{"name": x.name, "pattern": x.pattern, "mode": x.mode} for x in r.rules],
    }


def capture_summary(c: CaptureSettings) -> dict[str, Any]:
    return capture_to_json(c)
