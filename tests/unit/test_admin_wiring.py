"""The daemon glue: the tail observer over real OpenTelemetry spans; the layering part of status."""

from __future__ import annotations

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from hostagent.admin import convert
from hostagent.admin.status import LayeringStatus
from hostagent.admin.tap import SpanTap, TapFilter, tap_observer
from hostagent.admin.wiring import layering_status
from hostagent.config import Config, ExporterConfig, ReceiverConfig
from hostagent.model import Call, Role
from hostagent.receiver.wiring import Layering
from tests.support.otlp_receiver import OtlpGrpcReceiver, wait_until
from tests.support.ports import free_port


def _span() -> ReadableSpan:
    ctx = SpanContext(trace_id=0x1234, span_id=0x56, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name="GET /x", context=ctx, resource=Resource({"service.name": "shop"}), start_time=1_700_000_000_000
    )


def test_observer_is_idle_without_subscribers_and_publishes_with_them() -> None:
    tap = SpanTap()
    observe = tap_observer(tap)
    call = Call("http", Role.SERVER, 10, 2_000_010, "GET /x", attributes={"http.response.status_code": 200})
    observe(call, _span())  # nobody listening: nothing queued anywhere
    sub = tap.subscribe(TapFilter(service="shop"))
    observe(call, _span())
    item = sub.get(timeout=1)
    assert item is not None
    summary, dropped = item
    assert dropped == 0
    assert (summary.trace_id, summary.span_id, summary.service, summary.kind, summary.duration_ms) == (
        f"{0x1234:032x}",
        f"{0x56:016x}",
        "shop",
        "server",
        2.0,
    )
    assert summary.start_unix_nano == 1_700_000_000_000
    assert summary.attributes == {"http.response.status_code": "200"}


# -- status of SDK layering, from a real Layering (receiver on loopback, forwarding to a real
#    OTLP receiver standing in for the collector) -------------------------------------------------
RECEIVER_PORT = free_port()  # never a fixed port: another run on this host may hold it
TRACE, SDK_CLIENT = 0xABC1, 0x0102030405060708


def _sdk_request() -> ExportTraceServiceRequest:
    """An SDK's export: its CLIENT span for the call the agent saw, one CLIENT span the agent never
    sees, one INTERNAL span (never matched, so never held)."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for span_id, kind in ((SDK_CLIENT, PbSpan.SPAN_KIND_CLIENT), (0x99, PbSpan.SPAN_KIND_CLIENT),
                          (0x77, PbSpan.SPAN_KIND_INTERNAL)):
        s = spans.add(trace_id=TRACE.to_bytes(16, "big"), span_id=span_id.to_bytes(8, "big"), kind=kind, name="GET")
        s.start_time_unix_nano, s.end_time_unix_nano = 1, 2
    return req


def _agent_client_span() -> tuple[Call, ReadableSpan]:
    """What the agent made of the SDK's outgoing request (its traceparent names the SDK span)."""
    call = Call("http", Role.CLIENT, 10, 20, "GET", traceparent=f"00-{TRACE:032x}-{SDK_CLIENT:016x}-01",
                request_headers=(("accept", "*/*"),))
    ctx = SpanContext(trace_id=TRACE, span_id=0x5151, is_remote=False, trace_flags=TraceFlags(1))
    return call, ReadableSpan(name="GET", context=ctx, kind=SpanKind.CLIENT, start_time=10, end_time=20)


def test_layering_status_counts_what_the_sdk_layer_did() -> None:
    collector = OtlpGrpcReceiver().start()
    exported: list[ReadableSpan] = []
    config = Config(exporter=ExporterConfig(endpoint=collector.endpoint),
                    receiver=ReceiverConfig(grpc=f"127.0.0.1:{RECEIVER_PORT}", hold_ms=30_000, sdk_wait_ms=30_000))
    layering = Layering(config, exported.append, lambda: None).start()
    try:
        assert layering_status(layering) == LayeringStatus(
            receiver_enabled=True, linking_enabled=True, counters={"sdk_spans_received": 0}
        )
        layering.offer(*_agent_client_span())  # waits for its SDK span
        channel = grpc.insecure_channel(f"127.0.0.1:{RECEIVER_PORT}")
        TraceServiceStub(channel).Export(_sdk_request(), timeout=5)
        channel.close()
        st = layering_status(layering)
        # one SDK span matched (enriched, the agent's duplicate dropped), one held, one not holdable
        assert (st.held_sdk_spans, st.held_agent_spans) == (1, 0) and exported == []
        assert st.counters == {"received_traces": 1, "sdk_spans_received": 3, "sdk_spans_enriched": 1,
                               "agent_spans_deduplicated": 1}
        layering.stop(5)  # the held request goes out now
        assert wait_until(lambda: collector.recorder.trace_requests == 1, 10)
        msg = convert.layering_msg(layering_status(layering))
        assert (msg.receiver_enabled, msg.linking_enabled) == (True, True)
        assert (msg.sdk_requests_received, msg.sdk_spans_received, msg.sdk_spans_enriched,
                msg.duplicates_dropped) == (1, 3, 1, 1)
        assert (msg.sdk_spans_held, msg.agent_spans_held, msg.requests_forwarded) == (0, 0, 1)
        assert (msg.hold_overflow, msg.thread_links, msg.peer_links) == (0, 0, 0)
        assert dict(msg.counters)["sdk_spans_unmatched"] == 1 and dict(msg.counters)["forwarded_traces"] == 1
    finally:
        layering.stop(1)
        collector.stop()


def test_layering_status_without_a_receiver() -> None:
    layering = Layering(Config(), lambda span: None, lambda: None)
    assert layering_status(layering) == LayeringStatus(linking_enabled=True)
    assert layering_status(None) == LayeringStatus()


def test_overflow_and_links_add_up() -> None:
    counters = {"hold_overflow": 2, "sdk_hold_overflow": 3, "sdk_spans_late": 4, "sdk_spans_enriched": 1,
                "thread_links": 5, "peer_links": 6, "forwarded_traces": 7, "forwarded_metrics": 8}
    msg = convert.layering_msg(LayeringStatus(counters=counters, held_sdk_spans=9, held_agent_spans=10))
    assert (msg.hold_overflow, msg.sdk_spans_enriched, msg.thread_links, msg.peer_links) == (5, 5, 5, 6)
    assert (msg.requests_forwarded, msg.sdk_spans_held, msg.agent_spans_held) == (15, 9, 10)
