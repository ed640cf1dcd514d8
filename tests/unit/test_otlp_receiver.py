"""The test receiver itself: decoding is exact, restart keeps the port, waits time out loudly.

Requests are hand-built from the official protos and sent with a plain gRPC stub / urllib, so
these tests do not rely on the exporter code the other tests check with this receiver.
"""

from __future__ import annotations

import gzip
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan


def kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def request(name: str = "op") -> trace_service_pb2.ExportTraceServiceRequest:
    span = trace_pb2.Span(
        trace_id=bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736"),
        span_id=bytes.fromhex("00f067aa0ba902b7"),
        parent_span_id=bytes.fromhex("1111111111111111"),
        name=name,
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_700_000_000_000_000_001,
        end_time_unix_nano=1_700_000_000_000_000_009,
        trace_state="k=v",
        attributes=[
            kv("s", AnyValue(string_value="x")),
            kv("b", AnyValue(bool_value=True)),
            kv("i", AnyValue(int_value=-5)),
            kv("d", AnyValue(double_value=1.5)),
            kv("arr", AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(int_value=2)]))),
            kv("kvl", AnyValue(kvlist_value=KeyValueList(values=[kv("n", AnyValue(string_value="m"))]))),
            kv("raw", AnyValue(bytes_value=b"\x00\x01")),
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="boom"),
    )
    resource_spans = trace_pb2.ResourceSpans(
        resource=Resource(attributes=[kv("service.name", AnyValue(string_value="svc"))]),
        scope_spans=[trace_pb2.ScopeSpans(scope=InstrumentationScope(name="sc", version="1"), spans=[span])],
    )
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[resource_spans])


EXPECTED = ReceivedSpan(
    name="op",
    kind="CLIENT",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    span_id="00f067aa0ba902b7",
    parent_span_id="1111111111111111",
    start_unix_ns=1_700_000_000_000_000_001,
    end_unix_ns=1_700_000_000_000_000_009,
    attributes={"s": "x", "b": True, "i": -5, "d": 1.5, "arr": (1, 2), "kvl": {"n": "m"}, "raw": b"\x00\x01"},
    status_code=2,
    status_message="boom",
    resource={"service.name": "svc"},
    scope_name="sc",
    scope_version="1",
    trace_state="k=v",
    flags=0,
)


def send_grpc(port: int, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=5, metadata=[("x-k", "v")])


def test_grpc_decodes_exactly_and_keeps_raw_bytes(otlp_receiver: OtlpGrpcReceiver) -> None:
    req = request()
    send_grpc(otlp_receiver.port, req)
    assert otlp_receiver.wait_for_spans(1, 5) == [EXPECTED]
    assert otlp_receiver.recorder.raw == [req.SerializeToString()]
    assert otlp_receiver.recorder.headers[0]["x-k"] == "v"


def test_http_decodes_gzip(otlp_http_receiver: OtlpHttpReceiver) -> None:
    body = request().SerializeToString()
    post = urllib.request.Request(
        f"{otlp_http_receiver.endpoint}/v1/traces",
        data=gzip.compress(body),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(post, timeout=5) as response:
        assert response.status == 200
    assert otlp_http_receiver.wait_for_spans(1, 5) == [EXPECTED]
    assert otlp_http_receiver.recorder.raw == [body]


def test_http_unknown_path_is_404(otlp_http_receiver: OtlpHttpReceiver) -> None:
    post = urllib.request.Request(f"{otlp_http_receiver.endpoint}/v1/logs", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(post, timeout=5)
    assert error.value.code == 404


def test_stop_start_keeps_the_port_and_refuses_while_down() -> None:
    receiver = OtlpGrpcReceiver().start()
    port = receiver.port
    receiver.stop()
    with pytest.raises(grpc.RpcError) as error:
        send_grpc(port, request())
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    receiver.start()
    try:
        assert receiver.port == port
        send_grpc(port, request("after"))
        assert [s.name for s in receiver.wait_for_spans(1, 5)] == ["after"]
    finally:
        receiver.stop()


def test_fail_with_rejects_without_recording(otlp_receiver: OtlpGrpcReceiver) -> None:
    otlp_receiver.fail_with = grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as error:
        send_grpc(otlp_receiver.port, request())
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (otlp_receiver.rejected, otlp_receiver.spans) == (1, [])


def test_wait_for_predicate_clear_and_timeout(otlp_receiver: OtlpGrpcReceiver) -> None:
    send_grpc(otlp_receiver.port, request("a"))
    send_grpc(otlp_receiver.port, request("b"))
    got = otlp_receiver.wait_for_spans(lambda spans: any(s.name == "b" for s in spans), 5)
    assert sorted(s.name for s in got) == ["a", "b"]
    otlp_receiver.clear()
    assert otlp_receiver.spans == [] and otlp_receiver.recorder.raw == []
    with pytest.raises(TimeoutError, match="got 0 spans"):
        otlp_receiver.wait_for_spans(1, 0.2)
