"""Sampling decides on the trace a span ends up in, after trace linking: a local client and the
server call it made are kept or dropped together.

The real Pipeline, Layering and LocalLinker with the daemon's SpanBuilder; calls handed in as the
tracker hands them (``on_call``), a curl-like client on this host and the server it called.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from hostagent.config import Config
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline
from hostagent.policy.sampling import trace_id_ratio_sampled
from hostagent.receiver.wiring import Layering
from hostagent.settings import RuntimeSettings, SamplingSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.pipeline_parts import Exported, NoTracker

SERVER_PORT = 18080
ORIGIN_NS = 1_000_000_000




def call(role: Role, n: int, *, status: Optional[int] = 200, traceparent: Optional[str] = None) -> Call:
    """Request ``n`` on its own connection: the client (pid 400) from port 40000+n, the server
    (pid 200) answering inside the client's time."""
    start, end = (ORIGIN_NS + n * 10_000_000, ORIGIN_NS + n * 10_000_000 + 5_000_000)
    if role == Role.SERVER:
        start, end = start + 1_000_000, end - 1_000_000
    client_port = 40000 + n
    local, peer = ((Endpoint("127.0.0.1", client_port), Endpoint("127.0.0.1", SERVER_PORT)) if role == Role.CLIENT
                   else (Endpoint("127.0.0.1", SERVER_PORT), Endpoint("127.0.0.1", client_port)))
    pid = 400 if role == Role.CLIENT else 200
    attrs = {"http.request.method": "GET", "url.path": f"/item/{n}", "server.port": SERVER_PORT,
             "http.response.status_code": status}
    return Call(protocol="http", role=role, start_ns=start, end_ns=end, name="GET", attributes=attrs,
                traceparent=traceparent, error_type=str(status) if status and status >= 500 else None,
                conn=Connection(pid=pid, tid=pid, fd=5, peer=peer, local=local))


def pipeline(sampling: SamplingSettings) -> tuple[Pipeline, Layering, Exported]:
    exported = Exported()
    layering = Layering(Config(), exported.enqueue, lambda: None)
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    holder = SettingsHolder(RuntimeSettings(sampling=sampling))
    return Pipeline(holder, NoTracker(), builder.build, exported, linker=layering), layering, exported


def by_role(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {"client": [], "server": []}
    for s in spans:
        out[s.kind.name.lower()].append(s)
    return out


def test_a_linked_pair_is_kept_or_dropped_whole_at_the_trace_ratio() -> None:
    pipe, layering, exported = pipeline(SamplingSettings(ratio=0.5))
    pairs = 400
    for n in range(pairs):
        pipe.on_call(call(Role.SERVER, n))  # the server answers first; held for its client
        pipe.on_call(call(Role.CLIENT, n))
    layering.linker.flush_all()
    spans = by_role(exported.spans)
    servers_by_trace = {s.context.trace_id: s for s in spans["server"]}
    assert len(servers_by_trace) == len(spans["server"])
    # every kept server has its client kept, in the same trace, as its parent -- and the reverse
    assert sorted(servers_by_trace) == sorted(c.context.trace_id for c in spans["client"])
    for client in spans["client"]:
        server = servers_by_trace[client.context.trace_id]
        assert server.parent is not None and server.parent.span_id == client.context.span_id
        assert trace_id_ratio_sampled(client.context.trace_id, 0.5)  # kept by the ratio on its trace
    kept = len(spans["client"])
    assert 0.4 * pairs < kept < 0.6 * pairs  # 200 expected; binomial sd 10
    assert pipe.sampled_out == 2 * (pairs - kept) and pipe.spans == 2 * kept
    assert layering.linker.counters["peer_links"] == pairs


def test_ratio_zero_keeps_no_linked_span_and_one_keeps_all() -> None:
    for ratio, expected in ((0.0, 0), (1.0, 20)):
        pipe, layering, exported = pipeline(SamplingSettings(ratio=ratio))
        for n in range(10):
            pipe.on_call(call(Role.SERVER, n))
            pipe.on_call(call(Role.CLIENT, n))
        layering.linker.flush_all()
        assert len(exported.spans) == expected


def test_an_error_is_kept_under_a_dropped_parent_and_a_traceparent_still_rules() -> None:
    pipe, layering, exported = pipeline(SamplingSettings(ratio=0.0, keep_errors=True))
    pipe.on_call(call(Role.SERVER, 1, status=503))  # the tail rule keeps it; its client is dropped
    pipe.on_call(call(Role.CLIENT, 1, status=503))  # the client saw the 503 too: kept as well
    pipe.on_call(call(Role.SERVER, 2, status=500))
    pipe.on_call(call(Role.CLIENT, 2, status=200))  # (a proxy turned it into a 200): dropped
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # sampled flag set upstream
    pipe.on_call(replace(call(Role.SERVER, 3), traceparent=tp))
    layering.linker.flush_all()
    spans = by_role(exported.spans)
    assert sorted(s.attributes["url.path"] for s in spans["server"]) == ["/item/1", "/item/2", "/item/3"]
    assert [s.attributes["url.path"] for s in spans["client"]] == ["/item/1"]
    from_upstream = next(s for s in spans["server"] if s.attributes["url.path"] == "/item/3")
    assert from_upstream.context.trace_id == 0x4bf92f3577b34da6a3ce929d0e0e4736


def test_observers_see_the_kept_spans_with_their_final_trace() -> None:
    pipe, layering, exported = pipeline(SamplingSettings(ratio=0.5))
    seen: list[tuple[str, int]] = []
    pipe.observers.append(lambda c, s: seen.append((c.role.name, s.context.trace_id)))
    for n in range(50):
        pipe.on_call(call(Role.SERVER, n))
        pipe.on_call(call(Role.CLIENT, n))
    layering.linker.flush_all()
    assert sorted(seen) == sorted((s.kind.name, s.context.trace_id) for s in exported.spans)
    assert len({t for _, t in seen}) == len(seen) // 2  # two spans per trace, nothing seen alone


def test_an_observer_with_a_switch_is_called_only_while_the_switch_is_active() -> None:
    """The tail's observer (admin.wiring): while nobody tails, the pipeline reads the tap's
    ``active`` and calls nothing (a Python call per span otherwise)."""
    from hostagent.admin.tap import SpanTap, TapFilter, tap_observer

    pipe, layering, exported = pipeline(SamplingSettings(ratio=1.0))
    tap = SpanTap()
    seen: list[str] = []
    pipe.add_observer(lambda c, s: seen.append(c.attributes["url.path"]), tap)
    pipe.add_observer(tap_observer(tap), tap)
    pipe.on_call(call(Role.SERVER, 1))
    pipe.on_call(call(Role.CLIENT, 1))
    layering.linker.flush_all()
    assert seen == [] and len(exported.spans) == 2  # nobody tails: exported, never observed
    sub = tap.subscribe(TapFilter())
    pipe.on_call(call(Role.SERVER, 2))
    pipe.on_call(call(Role.CLIENT, 2))
    layering.linker.flush_all()
    assert sorted(seen) == ["/item/2", "/item/2"]
    assert sub.get(timeout=1) is not None and sub.get(timeout=1) is not None  # the tail got both
    sub.close()
    pipe.on_call(call(Role.SERVER, 3))
    layering.linker.flush_all()
    assert len(seen) == 2 and len(exported.spans) == 5
