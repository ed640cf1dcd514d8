"""What redaction finds and counts is what a span exports: the raw headers and bodies a Call
brings are turned into attributes per [capture] (hostagent.traces.wire), and only those are scanned.

Acceptance run: ``curl -d 'a=1&password=hunter2'`` with bodies off gave both spans
``hostagent.pii.types = ["secret_param"]`` (nothing exported held it) and ``hostagent status``
counted secret_param 3 times for it."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline
from hostagent.settings import CaptureSettings, RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.pipeline_parts import Exported, NoTracker

BODY = b"a=1&password=hunter2"
HEADERS = (("content-type", "application/x-www-form-urlencoded"), ("authorization", "Bearer abc123secret"))


def post() -> Call:
    return Call(protocol="http", role=Role.SERVER, start_ns=1_000, end_ns=2_000, name="POST",
                attributes={"http.request.method": "POST", "url.path": "/up", "http.response.status_code": 201},
                request_headers=HEADERS, request_body=BODY, request_size=len(BODY),
                conn=Connection(pid=300, tid=300, fd=7, peer=Endpoint("::1", 40898)))


@pytest.mark.parametrize("owned", [True, False])
@pytest.mark.parametrize(
    ("headers", "bodies", "types", "counts"),
    [
        (False, False, None, {}),
        (False, True, ("secret_param",), {"secret_param": 1}),
        (True, False, ("sensitive_header",), {"sensitive_header": 1}),
        (True, True, ("secret_param", "sensitive_header"), {"secret_param": 1, "sensitive_header": 1}),
    ],
)
def test_only_what_capture_exports_is_scanned_and_counted(owned: bool, headers: bool, bodies: bool,
                                                          types: Any, counts: dict[str, int]) -> None:
    exported = Exported()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    settings = RuntimeSettings(probes=frozenset({"http"}), capture=CaptureSettings(headers=headers, bodies=bodies))
    pipe = Pipeline(SettingsHolder(settings), NoTracker(), builder.build, exported)
    if owned:
        pipe._handle(post(), True)  # a Call from the tracker: its fields are replaced in place
    else:
        pipe.on_call(post())
    (span,) = exported.spans
    attrs = dict(span.attributes or {})
    assert attrs.get("hostagent.pii.types") == types
    assert pipe.pii.snapshot() == counts
    assert "hunter2" not in repr(attrs) and "abc123secret" not in repr(attrs)


def _pipe(exported: Exported) -> Pipeline:
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    settings = RuntimeSettings(probes=frozenset({"http"}), capture=CaptureSettings(headers=True, bodies=False))
    return Pipeline(SettingsHolder(settings), NoTracker(), builder.build, exported)


def test_an_owned_calls_attributes_are_written_in_place_and_its_wire_emptied() -> None:
    """A Call from the tracker is the pipeline's, its attributes dict too (each parser builds one
    per Call): the wire attributes go into that dict, no copy of it; the span has its own."""
    exported = Exported()
    pipe = _pipe(exported)
    call = post()
    attrs = call.attributes
    pipe._handle(call, True)
    (span,) = exported.spans
    assert call.attributes is attrs
    assert attrs["http.request.header.content-type"] == ("application/x-www-form-urlencoded",)
    assert attrs["http.request.body.size"] == len(BODY)
    assert (call.request_headers, call.response_headers, call.request_body, call.response_body) == ((), (), b"", b"")
    assert span.attributes["http.request.header.authorization"] == ("[REDACTED:sensitive_header]",)  # a new Call
    assert span.attributes is not attrs and "network.peer.address" not in attrs  # the span's own copy
    assert span.attributes["network.peer.address"] == "::1"
    assert span.attributes["http.request.header.content-type"] == ("application/x-www-form-urlencoded",)


def test_a_call_handed_in_is_left_as_it_was() -> None:
    exported = Exported()
    seen: list[Call] = []
    pipe = _pipe(exported)
    pipe.observers.append(lambda call, span: seen.append(call))
    call = post()
    before = dict(call.attributes)
    pipe.on_call(call)
    assert call.attributes == before and call.request_headers == HEADERS and call.request_body == BODY
    (handled,) = seen
    assert handled is not call and handled.attributes is not call.attributes
    assert (handled.request_headers, handled.request_body) == ((), b"")
    assert handled.attributes["http.request.body.size"] == len(BODY)
