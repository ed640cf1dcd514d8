"""The OTLP receiver (gRPC + HTTP front ends over one Intake) and the raw forwarder, in process on
loopback; the forwarder's targets are the tests' real OTLP receivers (collector stand-ins)."""

from __future__ import annotations

import gzip
import http.client
import time
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from hostagent.config import ExporterConfig
from hostagent.receiver.forward import RawForwarder, http_url
from hostagent.receiver.server import GrpcReceiver, HttpReceiver, Intake
from tests.support.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, wait_until
from tests.support.ports import free_port

# From tests.support.ports: two runs of the unit tests on one host (engineers, CI beside an
# acceptance run) took each other's receivers with fixed ports.
GRPC_PORT = free_port()
HTTP_PORT = free_port()


def request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "op"
    return req


class Sink:
    def __init__(self) -> None:
        self.traces: list[tuple[ExportTraceServiceRequest, int]] = []
        self.raw: list[tuple[str, bytes]] = []


@pytest.fixture
def fronts() -> Iterator[tuple[Sink, Intake]]:
    sink = Sink()
    intake = Intake(lambda r, n: sink.traces.append((r, n)), lambda s, b: sink.raw.append((s, b)))
    g = GrpcReceiver(f"127.0.0.1:{GRPC_PORT}", intake).start()
    h = HttpReceiver(f"127.0.0.1:{HTTP_PORT}", intake).start()
    yield sink, intake
    g.stop(0)
    h.stop()


def post(path: str, body: bytes, ctype: str = "application/x-protobuf", encoding: str = "") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=5)
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_grpc_and_http_accept_traces_and_pass_other_signals_raw(fronts: tuple[Sink, Intake]) -> None:
    sink, intake = fronts
    channel = grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}")
    trace_service_pb2_grpc.TraceServiceStub(channel).Export(request(), timeout=5)
    channel.close()
    raw = request().SerializeToString()
    assert post("/v1/traces", raw) == 200
    assert post("/v1/traces", gzip.compress(raw), encoding="gzip") == 200
    metrics = ExportMetricsServiceRequest().SerializeToString() + b"\x0a\x00"
    assert post("/v1/metrics", metrics) == 200
    assert [r for r, _ in sink.traces] == [request()] * 3 and [n for _, n in sink.traces] == [len(raw)] * 3
    assert sink.raw == [("metrics", metrics)]
    assert intake.counters["received_traces"] == 3


@pytest.mark.parametrize(("path", "body", "ctype", "status"), [
    ("/v1/traces", b"\xff\xff\xff", "application/x-protobuf", 400),  # not protobuf
    ("/v1/traces", b"{}", "application/json", 415),  # OTLP/JSON is not served
    ("/v1/nothing", b"", "application/x-protobuf", 404),
])
def test_http_errors(fronts: tuple[Sink, Intake], path: str, body: bytes, ctype: str, status: int) -> None:
    sink, _ = fronts
    assert post(path, body, ctype) == status
    assert sink.traces == []


def test_bad_gzip_is_400(fronts: tuple[Sink, Intake]) -> None:
    assert post("/v1/traces", b"not gzip", encoding="gzip") == 400


def test_grpc_malformed_is_invalid_argument(fronts: tuple[Sink, Intake]) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}")
    call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x80\x80\x80\x80\x10", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_intake_never_raises(payload: bytes) -> None:
    intake = Intake(lambda r, n: None, lambda s, b: None)
    for signal in ("traces", "metrics", "logs"):
        result = intake.take(signal, payload)
        assert result is None or result.startswith("not a valid OTLP")


def test_a_failing_consumer_does_not_fail_the_sdk() -> None:
    def boom(r: ExportTraceServiceRequest, n: int) -> None:
        raise RuntimeError("bug")

    intake = Intake(boom, lambda s, b: None)
    assert intake.take("traces", request().SerializeToString()) is None
    assert intake.counters["receiver_errors"] == 1


@pytest.mark.parametrize(("endpoint", "signal", "specific", "url"), [
    ("http://c:4318", "traces", False, "http://c:4318/v1/traces"),
    ("http://c:4318/", "logs", False, "http://c:4318/v1/logs"),
    ("https://gw/otlp", "metrics", False, "https://gw/otlp/v1/metrics"),
    ("http://c:4318/v1/traces", "metrics", False, "http://c:4318/v1/metrics"),
    ("http://c/custom/path", "traces", True, "http://c/custom/path"),
])
def test_http_url(endpoint: str, signal: str, specific: bool, url: str) -> None:
    assert http_url(endpoint, signal, specific) == url


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_forward_grpc_byte_for_byte(compression: str) -> None:
    collector = OtlpGrpcReceiver().start()
    try:
        fwd = RawForwarder(ExporterConfig(endpoint=collector.endpoint, compression=compression,
                                          headers=(("x-tenant", "t1"),))).start()
        payload = request().SerializeToString()
        assert fwd.submit("traces", payload)
        assert wait_until(lambda: collector.recorder.trace_requests == 1, 10)
        assert collector.recorder.raw == [payload]
        assert collector.recorder.headers[0]["x-tenant"] == "t1"
        fwd.stop(2)
        assert fwd.counters["forwarded_traces"] == 1
    finally:
        collector.stop()


def test_forward_http_gzip_and_queue_bound() -> None:
    collector = OtlpHttpReceiver().start()
    try:
        fwd = RawForwarder(ExporterConfig(endpoint=collector.endpoint, protocol="http/protobuf",
                                          compression="gzip"), max_queue=2)
        payload = request().SerializeToString()
        assert [fwd.submit("traces", payload) for _ in range(3)] == [True, True, False]
        assert fwd.counters["forward_queue_full"] == 1
        fwd.start()
        assert wait_until(lambda: collector.recorder.trace_requests == 2, 10)
        assert collector.recorder.raw == [payload, payload]
        fwd.stop(2)
    finally:
        collector.stop()


def test_forward_failures_are_counted_not_raised() -> None:
    fwd = RawForwarder(ExporterConfig(endpoint=f"http://127.0.0.1:{free_port()}", protocol="http/protobuf",
                                      timeout_ms=300)).start()
    fwd.submit("traces", b"")
    assert wait_until(lambda: fwd.counters["forward_failed"] == 1, 10)
    fwd.stop(1)
    no_exporter = RawForwarder(ExporterConfig(endpoint=""))
    assert not no_exporter.submit("traces", b"") and no_exporter.counters["forward_no_exporter"] == 1
    time.sleep(0)
