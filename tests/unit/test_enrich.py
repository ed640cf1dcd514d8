"""SdkLayer: SDK spans matched with agent spans by traceparent, enriched, deduplicated, held, bounded;
redaction of what the SDK sent; protobuf kept as sent."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.policy.redaction import Redactor
from hostagent.settings import RedactionRule, RedactionSettings
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.enrich import SdkLayer, redact_request
from hostagent.traces.spans import SpanBuilder
from tests.support.clock import ManualClock
from tests.support.live import LiveSpans

BUILD = SpanBuilder(MonotonicToUnix(0), resource_for=lambda call: Resource({"process.pid": 77, "service.name": "shop"}))
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SDK_CLIENT_ID = 0x00F067AA0BA902B7  # the id the SDK wrote as traceparent parent-id
UPSTREAM = 0x1111111111111111
TP_OUT = f"00-{TRACE:032x}-{SDK_CLIENT_ID:016x}-01"  # written by the SDK on the outgoing request
TP_IN = f"00-{TRACE:032x}-{UPSTREAM:016x}-01"  # on the incoming request


def agent_call(role: Role, traceparent: str) -> Call:
    return Call(protocol="http", role=role, start_ns=1_000, end_ns=9_000, name="POST",
                attributes={"http.request.method": "POST", "http.request.header.x-plain": ("v",),
                            "hostagent.http.request.body": "hello", "http.request.body.size": 5},
                traceparent=traceparent,
                conn=Connection(pid=77, tid=78, fd=9, peer=Endpoint("127.0.0.1", 8080)))


def sdk_request(kind: int, span_id: int, parent: int = 0, attrs: Any = ()) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="shop-sdk")))
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.flask"
    span = ss.spans.add()
    span.trace_id, span.span_id = TRACE.to_bytes(16, "big"), span_id.to_bytes(8, "big")
    span.kind, span.name = kind, "op"
    if parent:
        span.parent_span_id = parent.to_bytes(8, "big")
    span.events.add(name="sdk event")
    for key, value in attrs:
        span.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return req


def layer(**kw: Any) -> tuple[SdkLayer, list[ReadableSpan], list[ExportTraceServiceRequest], ManualClock]:
    emitted: list[ReadableSpan] = []
    forwarded: list[ExportTraceServiceRequest] = []
    clock = ManualClock()
    sdk = SdkLayer(lambda c, s: emitted.append(s), forwarded.append, clock=clock, **kw)
    return sdk, emitted, forwarded, clock


def attrs_of(span: PbSpan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        v = getattr(kv.value, which)
        out[kv.key] = tuple(x.string_value for x in v.values) if which == "array_value" else v
    return out


def only_span(req: ExportTraceServiceRequest) -> PbSpan:
    return req.resource_spans[0].scope_spans[0].spans[0]


def test_client_agent_first_then_sdk_span_merges() -> None:
    sdk, emitted, forwarded, _ = layer()
    call = agent_call(Role.CLIENT, TP_OUT)
    sdk.offer(call, BUILD.build(call))
    assert emitted == []  # waits for the SDK span
    req = sdk_request(PbSpan.SPAN_KIND_CLIENT, SDK_CLIENT_ID, parent=UPSTREAM)
    sdk.on_request(req, req.ByteSize())
    assert emitted == [] and len(forwarded) == 1  # the agent's duplicate dropped, SDK span forwarded
    a = attrs_of(only_span(forwarded[0]))
    assert a["http.request.header.x-plain"] == ("v",)
    assert a["hostagent.http.request.body"] == "hello"
    assert a["hostagent.process.pid"] == 77 and a["hostagent.service.name"] == "shop"
    assert a["hostagent.kernel.start_time_unix_nano"] == 1_000 and a["hostagent.kernel.tid"] == 78
    assert only_span(forwarded[0]).events[0].name == "sdk event"  # the rest kept as sent
    assert sdk.counters["agent_spans_deduplicated"] == 1


def test_server_sdk_first_then_agent_span_merges() -> None:
    sdk, emitted, forwarded, _ = layer()
    req = sdk_request(PbSpan.SPAN_KIND_SERVER, 0x2222222222222222, parent=UPSTREAM,
                      attrs=[("http.request.header.x-plain", "sdk wins")])
    sdk.on_request(req, req.ByteSize())
    assert forwarded == []  # held for its wire call
    call = agent_call(Role.SERVER, TP_IN)
    sdk.offer(call, BUILD.build(call))
    assert emitted == [] and len(forwarded) == 1
    a = attrs_of(only_span(forwarded[0]))
    assert a["http.request.header.x-plain"] == "sdk wins"  # what the SDK set is kept
    assert a["hostagent.http.request.body"] == "hello"
    assert sdk.held == {"sdk_spans": 0, "sdk_bytes": 0, "agent_spans": 0}


def test_thread_linked_child_of_a_dropped_agent_span_moves_under_the_sdk_span() -> None:
    sdk, emitted, _forwarded, _ = layer()
    call = agent_call(Role.SERVER, TP_IN)
    server = BUILD.build(call)
    sdk.offer(call, server)
    db = Call(protocol="redis", role=Role.CLIENT, start_ns=2_000, end_ns=3_000, name="GET")
    child = BUILD.build(db)
    from hostagent.traces.linking import respan

    assert server.context is not None
    child = respan(child, server.context.trace_id, server.context.span_id)
    sdk.offer(db, child)
    assert emitted == []  # waits with its parent
    req = sdk_request(PbSpan.SPAN_KIND_SERVER, 0x3333333333333333, parent=UPSTREAM)
    sdk.on_request(req, req.ByteSize())
    assert len(emitted) == 1 and emitted[0].parent is not None
    assert emitted[0].parent.span_id == 0x3333333333333333 and emitted[0].context.trace_id == TRACE  # type: ignore[union-attr]


def test_matched_agent_spans_are_not_kept_alive_until_their_deadline() -> None:
    """An agent span matched by its SDK span at once must not stay referenced by the deadline
    heap for the rest of its wait (up to sdk_wait_s), call and span with it."""
    import gc

    from hostagent.traces.linking import EXPIRY_SLACK

    sdk, emitted, forwarded, clock = layer()
    alive = LiveSpans()
    n = 3 * EXPIRY_SLACK
    for i in range(n):
        client_id = 0x1000 + i
        call = agent_call(Role.CLIENT, f"00-{TRACE:032x}-{client_id:016x}-01")
        span = BUILD.build(call)
        alive.add(span)
        sdk.offer(call, span)
        req = sdk_request(PbSpan.SPAN_KIND_CLIENT, client_id, parent=UPSTREAM)
        sdk.on_request(req, req.ByteSize())
    assert emitted == [] and len(forwarded) == n and sdk.counters["agent_spans_deduplicated"] == n
    gc.collect()
    assert len(alive) <= EXPIRY_SLACK + 2  # before the fix all n, until their deadlines
    clock.now = 10.0
    sdk.sweep()
    assert emitted == [] and sdk.counters["agent_spans_unmatched"] == 0
    assert sdk.held == {"sdk_spans": 0, "sdk_bytes": 0, "agent_spans": 0}


def test_unmatched_both_sides_after_the_hold() -> None:
    sdk, emitted, forwarded, clock = layer(hold_s=1.5)
    call = agent_call(Role.CLIENT, TP_OUT)
    sdk.offer(call, BUILD.build(call))
    req = sdk_request(PbSpan.SPAN_KIND_SERVER, 0x4444444444444444, parent=0x5555555555555555)
    sdk.on_request(req, req.ByteSize())
    clock.now = 1.49
    sdk.sweep()
    assert emitted == [] and forwarded == []
    clock.now = 1.5
    sdk.sweep()
    assert len(emitted) == 1 and len(forwarded) == 1
    assert attrs_of(only_span(forwarded[0])) == {}  # forwarded unchanged
    # the SDK span of the agent span that already left is still enriched, and the pid learnt
    late = sdk_request(PbSpan.SPAN_KIND_CLIENT, SDK_CLIENT_ID)
    sdk.on_request(late, late.ByteSize())
    assert attrs_of(only_span(forwarded[1]))["hostagent.http.request.body"] == "hello"
    assert sdk.counters["sdk_spans_late"] == 1
    # ... so the next agent span of that process waits longer (sdk_wait_s) for its SDK span
    call2 = agent_call(Role.CLIENT, f"00-{TRACE:032x}-{0x6666666666666666:016x}-01")
    sdk.offer(call2, BUILD.build(call2))
    clock.now = 1.5 + 5.9
    sdk.sweep()
    assert len(emitted) == 1


def test_internal_and_db_spans_are_not_held() -> None:
    sdk, _, forwarded, _ = layer()
    req = sdk_request(PbSpan.SPAN_KIND_INTERNAL, 0x7777777777777777)
    sdk.on_request(req, req.ByteSize())
    db = sdk_request(PbSpan.SPAN_KIND_CLIENT, 0x8888888888888888, attrs=[("db.system", "postgresql")])
    sdk.on_request(db, db.ByteSize())
    assert len(forwarded) == 2


def test_memory_bound_forwards_at_once_and_counts() -> None:
    sdk, _, forwarded, _ = layer(max_held_spans=1)
    for i in range(3):
        req = sdk_request(PbSpan.SPAN_KIND_CLIENT, 0x100 + i)
        sdk.on_request(req, req.ByteSize())
    assert len(forwarded) == 2 and sdk.counters["sdk_hold_overflow"] == 2 and sdk.held["sdk_spans"] == 1
    sdk2, _, forwarded2, _ = layer(max_held_bytes=10)
    req = sdk_request(PbSpan.SPAN_KIND_CLIENT, 0x200)
    sdk2.on_request(req, req.ByteSize())
    assert len(forwarded2) == 1


def test_redaction_of_what_the_sdk_sent() -> None:
    req = sdk_request(PbSpan.SPAN_KIND_SERVER, 0x9, parent=UPSTREAM, attrs=[
        ("url.query", "ref=canary-0123456789abcdef"), ("http.request.header.authorization", "Bearer x"),
        ("plain", "nothing here")])
    only_span(req).name = "GET canary-0123456789abcdef"
    redactor = Redactor(RedactionSettings(rules=(RedactionRule("canary", r"canary-[0-9a-f]{16}"),)), b"k" * 32)
    counts = redact_request(req, redactor)
    span = only_span(req)
    a = attrs_of(span)
    assert a["url.query"] == "ref=[REDACTED:canary]"
    assert a["http.request.header.authorization"] == "[REDACTED:sensitive_header]"
    assert a["plain"] == "nothing here"
    assert span.name == "GET [REDACTED:canary]"
    assert counts == {"canary": 2, "sensitive_header": 1}
    assert b"canary-0123" not in req.SerializeToString()


# -- an incoming request without traceparent: the SDK's SERVER span is a root --------------------------
def untraced_server_call(port: int, path: str, start: int, end: int) -> Call:
    """The agent's call as the HTTP/1 parser and span builder give it (seen live: curl -> a Flask app
    with the OTel SDK: 'GET' from the agent, 'GET /front/<name>' from the SDK, two traces)."""
    return Call(protocol="http", role=Role.SERVER, start_ns=start, end_ns=end, name="GET",
                attributes={"http.request.method": "GET", "url.path": path, "network.peer.port": port,
                            "http.request.header.x-plain": (path,)},
                conn=Connection(pid=77, tid=78, fd=9, peer=Endpoint("127.0.0.1", port)))  # fmt: skip


OLD_CONVENTIONS = (("http.method", "GET"), ("net.peer.port", 0), ("http.target", "{path}?q=1"))
NEW_CONVENTIONS = (("http.request.method", "GET"), ("network.peer.port", 0), ("url.path", "{path}"))


def sdk_root(span_id: int, port: int, path: str, start: int, conventions: Any = NEW_CONVENTIONS,
             ) -> ExportTraceServiceRequest:  # fmt: skip
    """A Flask instrumentation's root SERVER span (no parent), both conventions' attribute names."""
    req = sdk_request(PbSpan.SPAN_KIND_SERVER, span_id)
    span = only_span(req)
    span.start_time_unix_nano, span.end_time_unix_nano = start, start + 100
    for key, value in conventions:
        any_value = AnyValue(int_value=port) if key.endswith("port") else AnyValue(string_value=value.format(path=path))
        span.attributes.append(KeyValue(key=key, value=any_value))
    return req


def wire(req: ExportTraceServiceRequest) -> tuple[Any, Any]:
    a = attrs_of(only_span(req))
    return a.get("hostagent.kernel.start_time_unix_nano"), a.get("http.request.header.x-plain")


@pytest.mark.parametrize("conventions", [OLD_CONVENTIONS, NEW_CONVENTIONS])
def test_untraced_request_sdk_root_learns_then_deduplicates(conventions: Any) -> None:
    sdk, emitted, forwarded, _ = layer()
    # a process not known to have an SDK: its span leaves at once, as every other process's
    first = untraced_server_call(54164, "/front/amy", 1_000, 9_000)
    sdk.offer(first, BUILD.build(first))
    assert len(emitted) == 1
    req = sdk_root(0x9001, 54164, "/front/amy", 2_000, conventions)
    sdk.on_request(req, req.ByteSize())
    assert len(forwarded) == 1 and wire(forwarded[0]) == (None, None)  # unchanged: the twin left
    # now known: its next untraced server call waits for the SDK's root span, which takes its place
    second = untraced_server_call(54164, "/front/bo", 20_000, 29_000)
    sdk.offer(second, BUILD.build(second))
    assert len(emitted) == 1
    req = sdk_root(0x9002, 54164, "/front/bo", 21_000, conventions)
    sdk.on_request(req, req.ByteSize())
    assert len(emitted) == 1 and len(forwarded) == 2
    assert wire(forwarded[1]) == (20_000, ("/front/bo",))
    assert sdk.counters["agent_spans_deduplicated"] == 1
    assert sdk.held == {"sdk_spans": 0, "sdk_bytes": 0, "agent_spans": 0}


def test_untraced_request_sdk_root_first_then_agent_span() -> None:
    sdk, emitted, forwarded, _ = layer()
    req = sdk_root(0x9003, 40000, "/x", 5_000)
    sdk.on_request(req, req.ByteSize())
    assert forwarded == []  # held for its wire call
    call = untraced_server_call(40000, "/x", 4_000, 8_000)
    sdk.offer(call, BUILD.build(call))
    assert emitted == [] and len(forwarded) == 1 and wire(forwarded[0]) == (4_000, ("/x",))


def test_untraced_keep_alive_repeats_a_root_key_never_mispaired() -> None:
    """Two identical requests on one keep-alive connection have one key: the second agent span lets
    the first go; the first's SDK span starts outside the second's call and is not given its wire."""
    sdk, emitted, forwarded, _ = layer()
    sdk._sdk_pids[77] = 0.0  # an SDK process (learnt as in the test above)
    ms = 1_000_000
    a = untraced_server_call(40001, "/health", 10 * ms, 11 * ms)
    b = untraced_server_call(40001, "/health", 20 * ms, 21 * ms)  # 9 ms later
    sdk.offer(a, BUILD.build(a))
    sdk.offer(b, BUILD.build(b))
    assert [s.start_time for s in emitted] == [10 * ms]
    for span_id, start in ((0x9004, 10 * ms + 50_000), (0x9005, 20 * ms + 50_000)):
        req = sdk_root(span_id, 40001, "/health", start)
        sdk.on_request(req, req.ByteSize())
    assert [wire(r) for r in forwarded] == [(None, None), (20 * ms, ("/health",))]
    assert [s.start_time for s in emitted] == [10 * ms]


def test_sdk_root_without_its_wire_parts_is_not_held() -> None:
    sdk, _, forwarded, _ = layer()
    req = sdk_request(PbSpan.SPAN_KIND_SERVER, 0x9006, attrs=[("http.method", "GET")])  # no port, path
    sdk.on_request(req, req.ByteSize())
    assert len(forwarded) == 1


def test_untraced_traffic_does_not_push_out_late_traced_wire_detail() -> None:
    sdk, emitted, forwarded, clock = layer(hold_s=1.5)
    call = agent_call(Role.CLIENT, TP_OUT)
    sdk.offer(call, BUILD.build(call))
    clock.now = 1.5
    sdk.sweep()  # the traced agent span left unmatched: its wire detail is kept for a late SDK span
    for port in range(1, 9001):  # a busy server without SDK, none of its spans held
        other = untraced_server_call(port, "/busy", 1_000, 2_000)
        sdk.offer(other, BUILD.build(other))
    assert len(emitted) == 9001
    late = sdk_request(PbSpan.SPAN_KIND_CLIENT, SDK_CLIENT_ID)
    sdk.on_request(late, late.ByteSize())
    assert attrs_of(only_span(forwarded[-1]))["hostagent.http.request.body"] == "hello"
