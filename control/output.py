"""How hostagentctl prints answers: a readable table, or stable JSON (``-o json``).

JSON is the message's proto3 JSON mapping with the proto field names and every field present
(defaults included), keys sorted: scripts can rely on it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message


def as_dict(msg: Message) -> dict[str, Any]:
    return MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def dump_json(value: Any, compact: bool = False) -> str:
    if isinstance(value, Message):
        value = as_dict(value)
    if compact:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return json.dumps(value, sort_keys=True, indent=2)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _uptime(seconds: float) -> str:
    """3723 -> "1h02m03s"; 86461 -> "1d00h01m01s"."""
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m{s:02d}s"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s"


def _ratio(r: float) -> str:
    return f"{r:g}"


def probes_table(probes: Any) -> str:
    rows = [[p.name, "yes" if p.enabled else "no", p.state, p.reason] for p in probes]
    return table(["PROBE", "ENABLED", "STATE", "REASON"], rows)


def sampling_text(s: Any) -> str:
    lines = [f"ratio:            {_ratio(s.ratio)}"]
    for o in s.per_service:
        lines.append(f"service {o.name}: {_ratio(o.ratio)}")
    for o in s.per_protocol:
        lines.append(f"protocol {o.name}: {_ratio(o.ratio)}")
    lines.append(f"keep errors:      {'yes' if s.keep_errors else 'no'}")
    slow = f"{s.keep_slower_than_ms:g}ms" if s.HasField("keep_slower_than_ms") else "off"
    lines.append(f"keep slower than: {slow}")
    return "\n".join(lines)


def redaction_text(r: Any) -> str:
    pii = f"on ({r.mode})" if r.pii_detection else "off"
    lines = [f"pii detection: {pii}", f"detectors:     {', '.join(r.detectors)}"]
    if r.rules:
        lines.append(table(["RULE", "MODE", "PATTERN"], [[x.name, x.mode, x.pattern] for x in r.rules]))
    else:
        lines.append("rules:         none")
    return "\n".join(lines)


def _counts(values: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"


def _on(value: bool) -> str:
    return "on" if value else "off"


def capture_text(c: Any) -> str:
    bodies = f"on (up to {c.body_max_bytes} bytes)" if c.bodies else f"off (limit {c.body_max_bytes} bytes)"
    lines = [f"headers:   {_on(c.headers)}", f"bodies:    {bodies}", f"raw sql:   {_on(c.raw_sql)}"]
    if c.overrides:
        rows = [
            [
                o.service or "*",
                o.protocol or "*",
                _on(o.headers) if o.HasField("headers") else "-",
                _on(o.bodies) if o.HasField("bodies") else "-",
                str(o.body_max_bytes) if o.HasField("body_max_bytes") else "-",
            ]
            for o in c.overrides
        ]
        lines.append("overrides (in order, later ones win):")
        lines.append(table(["SERVICE", "PROTOCOL", "HEADERS", "BODIES", "BODY MAX"], rows))
    else:
        lines.append("overrides: none")
    return "\n".join(lines)


def layering_text(ly: Any) -> str:
    receiver = "on" if ly.receiver_enabled else "off (no [receiver] grpc/http)"
    return "\n".join(
        [
            f"receiver: {receiver}   linking: {_on(ly.linking_enabled)}",
            f"sdk spans received:  {ly.sdk_spans_received} (in {ly.sdk_requests_received} requests)",
            f"sdk spans enriched:  {ly.sdk_spans_enriched}",
            f"duplicates dropped:  {ly.duplicates_dropped}",
            f"held now:            {ly.sdk_spans_held} sdk, {ly.agent_spans_held} agent",
            f"requests forwarded:  {ly.requests_forwarded}",
            f"hold overflow:       {ly.hold_overflow}",
            f"linked:              {ly.thread_links} same-thread, {ly.peer_links} client->server",
            # telemetry exports (OTLP, Jaeger, Zipkin) and a local collector's side of the agent's
            # own: not traced ([capture] telemetry_calls)
            f"telemetry calls:     {ly.counters.get('telemetry_calls', 0)} + "
            f"{ly.counters.get('agent_export_calls', 0)} of the agent's own exports (not traced)",
        ]
    )


CAPTURE_LOSS_PREFIX = "capture_"  # hostagent.daemon.LOSSES_OF_CAPTURE: calls lost before parsing


def status_text(st: Any) -> str:
    headers = f" (headers: {st.kernel_headers})" if st.kernel_headers else ""
    exporter = st.exporter_endpoint or "-"
    if st.exporter_last_error:
        exporter += f" (last error: {st.exporter_last_error})"
    parts = [
        f"hostagent {st.version or '?'}  up {_uptime(st.uptime_seconds)}  healthy: {'yes' if st.healthy else 'NO'}",
        f"kernel:         {st.kernel_release or '?'}{headers}",
        f"events/s:       {st.events_per_second:.1f}",
        f"spans exported: {st.spans_exported}",
        f"drops:          {_counts({k: v for k, v in st.drops.items() if not k.startswith(CAPTURE_LOSS_PREFIX)})}",
        f"capture losses: {_counts({k: v for k, v in st.drops.items() if k.startswith(CAPTURE_LOSS_PREFIX)})}",
        f"exporter:       {exporter}",
        f"cpu effort:     {st.cpu_effort or '-'}",
        f"redacted:       {_counts(st.redacted)}",
        f"connections:    {_counts(st.connections)}",
        f"runtime changes: {'yes (hostagentctl reset drops them)' if st.runtime_overrides else 'none'}",
        "",
        probes_table(st.probes),
        "",
        "sampling",
        "  " + sampling_text(st.sampling).replace("\n", "\n  "),
        "redaction",
        "  " + redaction_text(st.redaction).replace("\n", "\n  "),
        "capture",
        "  " + capture_text(st.capture).replace("\n", "\n  "),
        "layering",
        "  " + layering_text(st.layering).replace("\n", "\n  "),
    ]
    return "\n".join(parts)


def span_line(s: Any) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(s.start_unix_nano / 1e9))
    ms = (s.start_unix_nano // 1_000_000) % 1000
    lost = f"  ({s.dropped_before} spans lost before this one)" if s.dropped_before else ""
    status = s.status + (f"({s.error_type})" if s.error_type else "")
    return (
        f"{when}.{ms:03d}  {s.service or '-'}  {s.protocol}  {s.kind}  {s.name}  "
        f"{s.duration_ms:.2f}ms  {status}  {s.peer or '-'}  trace={s.trace_id}{lost}"
    )
