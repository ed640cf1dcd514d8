"""SpanBuilder: Calls -> ReadableSpans with exact attributes, kinds, status, times and context."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

import hostagent
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder

OFFSET = 1_700_000_000_000_000_000  # fixed monotonic -> unix offset, so times are exact
TP_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TP_PARENT = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FIXED_RESOURCE = Resource({"service.name": "svc"})


def builder() -> SpanBuilder:
    return SpanBuilder(MonotonicToUnix(OFFSET), resource_for=lambda call: FIXED_RESOURCE)


PEER = Endpoint("127.0.0.1", 5432)
LOCAL = Endpoint("127.0.0.1", 40000)


def conn(
    peer: Optional[Endpoint] = PEER,
    local: Optional[Endpoint] = LOCAL,
    transport: str = "tcp",
) -> Connection:
    return Connection(pid=42, tid=43, fd=7, local=local, peer=peer, transport=transport, comm="app")


def call(**overrides: Any) -> Call:
    fields: dict[str, Any] = dict(
        protocol="http",
        role=Role.CLIENT,
        start_ns=1_000,
        end_ns=3_500,
        name="GET",
        attributes={"http.request.method": "GET"},
    )
    fields.update(overrides)
    return Call(**fields)


@pytest.mark.parametrize(
    ("role", "kind"),
    [(Role.CLIENT, SpanKind.CLIENT), (Role.SERVER, SpanKind.SERVER), (Role.UNKNOWN, SpanKind.INTERNAL)],
)
def test_kind_follows_role(role: Role, kind: SpanKind) -> None:
    assert builder().build(call(role=role)).kind == kind


def test_name_times_scope_resource() -> None:
    span = builder().build(call(name="SELECT orders", start_ns=123_456, end_ns=999_999))
    assert span.name == "SELECT orders"
    assert span.start_time == OFFSET + 123_456
    assert span.end_time == OFFSET + 999_999
    assert span.instrumentation_scope is not None
    assert (span.instrumentation_scope.name, span.instrumentation_scope.version) == (
        "hostagent",
        hostagent.__version__,
    )
    assert span.resource is FIXED_RESOURCE


def test_end_before_start_is_clamped() -> None:
    # A response stamped on another CPU can come out a hair earlier; a span must not go backwards.
    span = builder().build(call(start_ns=5_000, end_ns=4_000))
    assert span.start_time == span.end_time == OFFSET + 5_000


def test_no_connection_keeps_parser_attributes_only() -> None:
    span = builder().build(call(attributes={"http.request.method": "GET", "url.path": "/a"}))
    assert dict(span.attributes or {}) == {"http.request.method": "GET", "url.path": "/a"}


def test_client_connection_attributes() -> None:
    span = builder().build(call(conn=conn(peer=Endpoint("127.0.0.1", 5432))))
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "network.transport": "tcp",
        "network.type": "ipv4",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": 5432,
        "server.address": "127.0.0.1",
        "server.port": 5432,
    }


def test_client_keeps_server_address_from_host_header() -> None:
    attrs = {"http.request.method": "GET", "server.address": "example.test"}
    span = builder().build(call(attributes=attrs, conn=conn(peer=Endpoint("127.0.0.1", 8080))))
    assert span.attributes is not None
    assert span.attributes["server.address"] == "example.test"
    assert span.attributes["server.port"] == 8080  # the port really connected to
    assert span.attributes["network.peer.address"] == "127.0.0.1"


def test_client_keeps_parser_server_port() -> None:
    attrs = {"server.address": "example.test", "server.port": 443}
    span = builder().build(call(attributes=attrs, conn=conn(peer=Endpoint("127.0.0.1", 8443))))
    assert span.attributes is not None
    assert (span.attributes["server.port"], span.attributes["network.peer.port"]) == (443, 8443)


def test_server_connection_attributes_ipv6() -> None:
    c = conn(peer=Endpoint("::1", 51000), local=Endpoint("::1", 8080))
    span = builder().build(call(role=Role.SERVER, attributes={}, conn=c))
    assert dict(span.attributes or {}) == {
        "network.transport": "tcp",
        "network.type": "ipv6",
        "network.peer.address": "::1",
        "network.peer.port": 51000,
        "client.address": "::1",
        "server.port": 8080,
    }


def test_server_parser_client_address_wins() -> None:
    c = conn(peer=Endpoint("127.0.0.1", 51000), local=Endpoint("127.0.0.1", 80))
    span = builder().build(call(role=Role.SERVER, attributes={"client.address": "203.0.113.9"}, conn=c))
    assert span.attributes is not None
    assert span.attributes["client.address"] == "203.0.113.9"


def test_udp_and_unknown_peer() -> None:
    span = builder().build(call(conn=conn(peer=None, local=None, transport="udp")))
    assert dict(span.attributes or {}) == {"http.request.method": "GET", "network.transport": "udp"}


def test_unix_socket_has_no_network_type() -> None:
    span = builder().build(call(conn=conn(peer=Endpoint("/run/app.sock", 0), transport="unix")))
    attrs = dict(span.attributes or {})
    assert attrs["network.transport"] == "unix"
    assert "network.type" not in attrs
    assert "network.peer.port" not in attrs


def test_call_attributes_not_mutated() -> None:
    attrs = {"http.request.method": "GET"}
    builder().build(call(attributes=attrs, conn=conn(), error_type="500"))
    assert attrs == {"http.request.method": "GET"}


def test_error_status() -> None:
    span = builder().build(call(error_type="500", status_message="Internal Server Error"))
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "Internal Server Error"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "500"


def test_error_status_without_message_uses_error_type() -> None:
    span = builder().build(call(error_type="timeout"))
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "timeout")


def test_ok_status_is_unset() -> None:
    span = builder().build(call())
    assert span.status.status_code == StatusCode.UNSET
    assert "error.type" not in (span.attributes or {})


def test_server_joins_incoming_trace() -> None:
    span = builder().build(call(role=Role.SERVER, traceparent=TRACEPARENT, tracestate="vendor=abc"))
    ctx = span.context
    assert ctx.trace_id == TP_TRACE
    assert ctx.span_id not in (0, TP_PARENT)
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id, span.parent.is_remote) == (TP_TRACE, TP_PARENT, True)
    assert int(ctx.trace_flags) == 1
    assert ctx.trace_state.to_header() == "vendor=abc"


def test_client_with_traceparent_is_child_of_sdk_span() -> None:
    span = builder().build(call(role=Role.CLIENT, traceparent=TRACEPARENT))
    assert span.context.trace_id == TP_TRACE
    assert span.parent is not None and span.parent.span_id == TP_PARENT
    assert span.context.span_id != TP_PARENT  # never duplicate the SDK's own span id


def test_unsampled_flag_is_carried() -> None:
    span = builder().build(call(role=Role.SERVER, traceparent=TRACEPARENT[:-2] + "00"))
    assert int(span.context.trace_flags) == 0


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        TRACEPARENT.upper(),  # hex must be lowercase
        "ff" + TRACEPARENT[2:],  # version ff is forbidden
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        TRACEPARENT + "-extra",  # version 00 has nothing after the flags
        TRACEPARENT[:-1],  # too short
    ],
)
def test_invalid_traceparent_starts_new_trace(bad: str) -> None:
    span = builder().build(call(role=Role.SERVER, traceparent=bad))
    assert span.parent is None
    assert span.context.trace_id != TP_TRACE
    assert span.context.trace_id != 0


def test_new_traces_are_distinct_and_sampled() -> None:
    b = builder()
    spans = [b.build(call()) for _ in range(200)]
    assert len({s.context.trace_id for s in spans}) == 200
    assert len({s.context.span_id for s in spans}) == 200
    assert all(s.parent is None and int(s.context.trace_flags) == 1 for s in spans)
    assert all(not s.context.is_remote and s.context.is_valid for s in spans)
