"""Real OTLP exporters -> the real in-process receiver, over gRPC and HTTP/protobuf.

No root needed: everything is on 127.0.0.1 in this process. Proves the bytes on the wire carry
exactly the ids, timestamps, attributes and resource SpanBuilder made, and that a collector that
goes away costs counted drops, never a blocked pipeline, and that export resumes when it returns.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.export.otlp import endpoint_address, http_signal_endpoint, make_otlp_exporter, refuses_connections
from hostagent.export.queue import ExportQueue
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.otlp_receiver import (
    OtlpGrpcReceiver,
    OtlpHttpReceiver,
    ReceivedSpan,
    make_self_signed,
    wait_until,
)

OFFSET = 1_700_000_000_000_000_000
RESOURCE = Resource({"service.name": "checkout", "process.pid": 4242, "host.name": "box1"})
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def builder() -> SpanBuilder:
    return SpanBuilder(MonotonicToUnix(OFFSET), resource_for=lambda call: RESOURCE)


def server_call(i: int = 0, **kw: Any) -> Call:
    fields: dict[str, Any] = dict(
        protocol="http",
        role=Role.SERVER,
        start_ns=1_000_000 + i,
        end_ns=3_000_000 + i,
        name="GET /items/{id}",
        attributes={
            "http.request.method": "GET",
            "url.path": f"/items/{i}",
            "http.response.status_code": 500,
            "http.route": "/items/{id}",
            "flag": True,
            "ratio": 0.5,
            "tags": ("a", "b"),
        },
        error_type="500",
        status_message="Internal Server Error",
        traceparent=TRACEPARENT,
        conn=Connection(pid=4242, tid=4243, fd=9, local=Endpoint("127.0.0.1", 8080), peer=Endpoint("127.0.0.1", 50000)),
    )
    fields.update(kw)
    return Call(**fields)


def check_exact(got: ReceivedSpan, span_id: int) -> None:
    assert got.name == "GET /items/{id}"
    assert got.kind == "SERVER"
    assert got.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert got.parent_span_id == "00f067aa0ba902b7"
    assert got.span_id == f"{span_id:016x}"
    assert (got.start_unix_ns, got.end_unix_ns) == (OFFSET + 1_000_000, OFFSET + 3_000_000)
    assert got.attributes == {
        "http.request.method": "GET",
        "url.path": "/items/0",
        "http.response.status_code": 500,
        "http.route": "/items/{id}",
        "flag": True,
        "ratio": 0.5,
        "tags": ("a", "b"),
        "error.type": "500",
        "network.transport": "tcp",
        "network.type": "ipv4",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": 50000,
        "client.address": "127.0.0.1",
        "server.port": 8080,
    }
    assert (got.status_code, got.status_message) == (2, "Internal Server Error")
    assert got.resource == {"service.name": "checkout", "process.pid": 4242, "host.name": "box1"}
    assert (got.scope_name, got.scope_version) == ("hostagent", "0.1.0")


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_grpc_exact_span(otlp_receiver: OtlpGrpcReceiver, compression: str) -> None:
    span = builder().build(server_call())
    exporter = make_otlp_exporter(
        otlp_receiver.endpoint, "grpc", headers={"x-tenant": "t1"}, timeout_s=5, compression=compression
    )
    assert exporter.export([span]).name == "SUCCESS"
    (got,) = otlp_receiver.wait_for_spans(1, 5)
    check_exact(got, span.context.span_id)
    assert otlp_receiver.recorder.headers[0]["x-tenant"] == "t1"
    exporter.shutdown()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_http_exact_span(otlp_http_receiver: OtlpHttpReceiver, compression: str) -> None:
    span = builder().build(server_call())
    # The base endpoint: the factory appends /v1/traces as the OTLP spec says.
    exporter = make_otlp_exporter(
        otlp_http_receiver.endpoint,
        "http/protobuf",
        headers={"x-tenant": "t1"},
        timeout_s=5,
        compression=compression,
    )
    assert exporter.export([span]).name == "SUCCESS"
    (got,) = otlp_http_receiver.wait_for_spans(1, 5)
    check_exact(got, span.context.span_id)
    headers = otlp_http_receiver.recorder.headers[0]
    assert headers["x-tenant"] == "t1"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers.get("content-encoding", "") == ("gzip" if compression == "gzip" else "")
    exporter.shutdown()


def test_raw_bytes_contain_exactly_what_was_sent(otlp_receiver: OtlpGrpcReceiver) -> None:
    secret = "s3cr3t-token-value"
    exporter = make_otlp_exporter(otlp_receiver.endpoint, "grpc", timeout_s=5, compression="gzip")
    exporter.export([builder().build(server_call(attributes={"note": "public"}))])
    otlp_receiver.wait_for_spans(1, 5)
    raw = otlp_receiver.recorder.all_bytes()
    assert b"public" in raw and b"checkout" in raw  # decompressed payload, so the scan is meaningful
    assert secret.encode() not in raw
    exporter.shutdown()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
        ("https://gw.test/otlp", "https://gw.test/otlp/v1/traces"),
        ("https://gw.test/otlp/v1/traces", "https://gw.test/otlp/v1/traces"),
    ],
)
def test_http_signal_endpoint(given: str, expected: str) -> None:
    assert http_signal_endpoint(given) == expected


def test_http_metrics_endpoint() -> None:
    assert http_signal_endpoint("http://h:4318", "metrics") == "http://h:4318/v1/metrics"


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError):
        make_otlp_exporter("http://127.0.0.1:1", "thrift")
    with pytest.raises(ValueError):
        make_otlp_exporter("http://127.0.0.1:1", "grpc", compression="zstd")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_queue_survives_collector_down_then_up(protocol: str) -> None:
    receiver: Any = OtlpGrpcReceiver().start() if protocol == "grpc" else OtlpHttpReceiver().start()
    exporter = make_otlp_exporter(receiver.endpoint, protocol, timeout_s=1.0)
    queue = ExportQueue([exporter], max_queue=100, batch_size=10, delay_s=0.05, max_retries=1, retry_pause_s=0.1)
    queue.start()
    b = builder()
    try:
        queue.put_many(b.build(server_call(i)) for i in range(10))
        receiver.wait_for_spans(10, 10)
        assert wait_until(lambda: queue.stats().exported == 10, 5)

        receiver.stop()  # the collector goes away
        started = time.perf_counter()
        accepted = queue.put_many(b.build(server_call(i)) for i in range(10, 210))
        assert time.perf_counter() - started < 0.5  # capture never waits on the network
        assert wait_until(lambda: queue.stats().dropped_export_failed >= 10, 15)
        stats = queue.stats()
        assert stats.failed_attempts >= 2 and stats.last_error
        assert stats.dropped_queue_full == 200 - accepted
        assert stats.dropped_queue_full > 0  # 100 slots, 200 offered while nothing drains fast

        receiver.start()  # same port: the collector is back
        assert wait_until(lambda: queue.stats().queued == 0, 30)
        receiver.clear()
        queue.put_many(b.build(server_call(i)) for i in range(1000, 1005))
        got = receiver.wait_for_spans(5, 15)
        assert sorted(s.attributes["url.path"] for s in got) == [f"/items/{i}" for i in range(1000, 1005)]
    finally:
        queue.shutdown(5)
        receiver.stop()
    stats = queue.stats()
    # Nothing is lost silently: every accepted span was exported or counted as failed.
    assert stats.enqueued == stats.exported + stats.dropped_export_failed + stats.dropped_shutdown


def test_grpc_unavailable_is_retried_by_the_exporter(otlp_receiver: OtlpGrpcReceiver) -> None:
    otlp_receiver.fail_with = grpc.StatusCode.UNAVAILABLE
    exporter = make_otlp_exporter(otlp_receiver.endpoint, "grpc", timeout_s=1.5)
    assert exporter.export([builder().build(server_call())]).name == "FAILURE"
    assert otlp_receiver.rejected >= 2  # the exporter's own backoff retried before giving up
    otlp_receiver.fail_with = None
    assert exporter.export([builder().build(server_call())]).name == "SUCCESS"
    assert len(otlp_receiver.wait_for_spans(1, 5)) == 1
    exporter.shutdown()


def test_shutdown_exports_everything_queued(otlp_receiver: OtlpGrpcReceiver) -> None:
    exporter = make_otlp_exporter(otlp_receiver.endpoint, "grpc", timeout_s=5)
    queue = ExportQueue([exporter], batch_size=512, delay_s=60).start()  # only shutdown flushes
    b = builder()
    queue.put_many(b.build(server_call(i)) for i in range(2000))
    assert queue.shutdown(10) is True
    assert len(otlp_receiver.spans) == 2000
    assert len({s.span_id for s in otlp_receiver.spans}) == 2000


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return make_self_signed(str(tmp_path_factory.mktemp("tls")))


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tls_with_the_collectors_ca(tls_files: tuple[str, str], protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Set on many hosts; requests let it override the configured CA (see otlp._pinned_ca_session).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    receiver: Any = (OtlpGrpcReceiver if protocol == "grpc" else OtlpHttpReceiver)(tls=tls_files).start()
    try:
        assert receiver.endpoint.startswith("https://")
        exporter = make_otlp_exporter(receiver.endpoint, protocol, timeout_s=5, certificate=tls_files[1])
        assert exporter.export([builder().build(server_call())]).name == "SUCCESS"
        assert len(receiver.wait_for_spans(1, 5)) == 1
        exporter.shutdown()
        # Without the CA the self-signed collector is not trusted: no span may leave.
        untrusted = make_otlp_exporter(receiver.endpoint, protocol, timeout_s=1)
        assert untrusted.export([builder().build(server_call())]).name == "FAILURE"
        assert len(receiver.spans) == 1
        untrusted.shutdown()
    finally:
        receiver.stop()


def test_grpc_endpoint_without_scheme(tls_files: tuple[str, str], otlp_receiver: OtlpGrpcReceiver) -> None:
    # host:port alone: plaintext unless a CA is given, then TLS.
    plain = make_otlp_exporter(f"127.0.0.1:{otlp_receiver.port}", "grpc", timeout_s=5)
    assert plain.export([builder().build(server_call())]).name == "SUCCESS"
    plain.shutdown()
    secure = OtlpGrpcReceiver(tls=tls_files).start()
    try:
        exporter = make_otlp_exporter(f"127.0.0.1:{secure.port}", "grpc", timeout_s=5, certificate=tls_files[1])
        assert exporter.export([builder().build(server_call())]).name == "SUCCESS"
        assert len(secure.wait_for_spans(1, 5)) == 1
        exporter.shutdown()
    finally:
        secure.stop()


@pytest.mark.parametrize(
    ("endpoint", "protocol", "address"),
    [
        ("http://127.0.0.1:4317", "grpc", ("127.0.0.1", 4317)),
        ("127.0.0.1:4317", "grpc", ("127.0.0.1", 4317)),
        ("https://collector.example", "grpc", ("collector.example", 4317)),
        ("http://collector.example", "http/protobuf", ("collector.example", 4318)),
        ("https://gw.example/otlp", "http/protobuf", ("gw.example", 443)),
        ("http://[::1]:4317", "grpc", ("::1", 4317)),
        ("http://127.0.0.1:4318/v1/traces", "http/protobuf", ("127.0.0.1", 4318)),
        ("", "grpc", None),
        ("http://127.0.0.1:port", "grpc", None),
    ],
)
def test_the_address_an_endpoint_connects_to(endpoint: str, protocol: str, address: object) -> None:
    assert endpoint_address(endpoint, protocol) == address


def test_a_collector_is_called_down_only_when_its_port_refuses() -> None:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    try:
        assert not refuses_connections(f"http://127.0.0.1:{listening.getsockname()[1]}", "grpc")
        assert refuses_connections(f"http://127.0.0.1:{free_port}", "grpc")
        assert not refuses_connections("", "grpc")  # console only: nothing to wait for anyway
    finally:
        listening.close()
