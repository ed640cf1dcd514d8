"""An app with its own OpenTelemetry SDK, exporting to the agent's receiver: one trace, no call
twice, the SDK's spans carrying the wire detail, a canary secret nowhere in the exported bytes.

    test client --traceparent--> Flask (SDK: flask + requests instrumentation) --> http_app (no SDK)

Real daemon and BPF, a real Flask app with the real SDK exporting OTLP/HTTP to the agent, spans
at a real OTLP/gRPC receiver standing in for the collector.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app, wait_port

pytestmark = pytest.mark.root

RECEIVER_GRPC = free_port()
RECEIVER_HTTP = free_port()
FLASK_PORT = free_port()
DOWNSTREAM_PORT = free_port()
CANARY = "canary-0123456789abcdef"
HOLD_MS = 1500

FLASK_APP = '''
import sys
import requests
from flask import Flask, request
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

port, downstream, receiver = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
provider = TracerProvider(resource=Resource.create({"service.name": "flask-sdk"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver + "/v1/traces"),
                                               schedule_delay_millis=200))
trace.set_tracer_provider(provider)
app = Flask(__name__)
FlaskInstrumentor().instrument_app(app)
RequestsInstrumentor().instrument()

@app.route("/order", methods=["POST"])
def order():
    r = requests.post(f"http://127.0.0.1:{downstream}/echo", data=request.get_data(),
                      headers={"X-Secret": request.headers.get("X-Secret", ""), "Content-Type": "text/plain"})
    return r.content

app.run(host="127.0.0.1", port=port, threaded=True)
'''


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpGrpcReceiver]:
    r = OtlpGrpcReceiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def agent(collector: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"), collector.endpoint, extra={
        "exporter": {"batch_size": 64},
        "capture": {"bodies": True},
        "receiver": {"grpc": f"127.0.0.1:{RECEIVER_GRPC}", "http": f"127.0.0.1:{RECEIVER_HTTP}",
                     "hold_ms": HOLD_MS},
        "redaction": {"rules": [{"name": "canary", "pattern": "canary-[0-9a-f]{16}"}]},
    }).start()
    yield a
    assert a.stop() == 0


@pytest.fixture(scope="module")
def apps(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    downstream = start_http_app(DOWNSTREAM_PORT)
    script = tmp_path_factory.mktemp("flask") / "flask_sdk_app.py"
    script.write_text(FLASK_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen([sys.executable, str(script), str(FLASK_PORT), str(DOWNSTREAM_PORT),
                             f"http://127.0.0.1:{RECEIVER_HTTP}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(FLASK_PORT)
    flask = Server(proc, FLASK_PORT, "flask")
    yield {"flask": flask, "downstream": downstream}
    flask.stop()
    downstream.stop()


def in_trace(collector: OtlpGrpcReceiver, trace_id: str, count: int, settle: float = 3.0) -> list[ReceivedSpan]:
    collector.recorder.wait_for_spans(lambda spans: sum(1 for s in spans if s.trace_id == trace_id) >= count, 20)
    time.sleep(settle)  # held spans go out after the hold: a duplicate would arrive by now
    return [s for s in collector.recorder.spans if s.trace_id == trace_id]


def test_one_trace_sdk_spans_enriched_no_duplicates(collector: OtlpGrpcReceiver, apps: dict[str, Server]) -> None:
    trace_id, parent = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
    body = f'{{"item": 7, "note": "{CANARY}"}}'.encode()
    conn = http.client.HTTPConnection("127.0.0.1", FLASK_PORT, timeout=10)
    conn.request("POST", f"/order?ref={CANARY}", body=body, headers={
        "traceparent": f"00-{trace_id}-{parent}-01", "X-Secret": CANARY, "Authorization": f"Bearer {CANARY}",
        "Content-Type": "application/json", "X-Plain": "visible"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == body
    conn.close()
    spans = in_trace(collector, trace_id, 4)
    # exactly: the test client's CLIENT span (agent), Flask's SERVER and CLIENT spans (SDK, enriched),
    # the downstream's SERVER span (agent) -- nothing twice
    assert sorted((s.kind, s.scope_name) for s in spans) == [
        ("CLIENT", "hostagent"), ("CLIENT", "opentelemetry.instrumentation.requests"),
        ("SERVER", "hostagent"), ("SERVER", "opentelemetry.instrumentation.flask")]
    by_scope = {s.scope_name: s for s in spans if s.scope_name != "hostagent"}
    sdk_server = by_scope["opentelemetry.instrumentation.flask"]
    sdk_client = by_scope["opentelemetry.instrumentation.requests"]
    test_client = next(s for s in spans if s.kind == "CLIENT" and s.scope_name == "hostagent")
    downstream = next(s for s in spans if s.kind == "SERVER" and s.scope_name == "hostagent")
    flask_pid, downstream_pid = apps["flask"].pid, apps["downstream"].pid
    # the tree
    assert test_client.parent_span_id == parent and test_client.resource["process.pid"] == os.getpid()
    assert sdk_server.parent_span_id == parent
    assert sdk_client.parent_span_id == sdk_server.span_id
    assert downstream.parent_span_id == sdk_client.span_id
    assert downstream.resource["process.pid"] == downstream_pid
    # the SDK's own resource and scope are kept
    assert sdk_server.resource["service.name"] == "flask-sdk"
    assert sdk_server.resource["telemetry.sdk.name"] == "opentelemetry"
    # wire detail on the SDK's server span: headers, body, identity, kernel timings -- redacted
    a = sdk_server.attributes
    assert a["http.request.header.x-plain"] == ("visible",)
    assert a["http.request.header.x-secret"] == ("[REDACTED:canary]",)
    assert a["http.request.header.authorization"] == ("[REDACTED:sensitive_header]",)
    assert a["hostagent.http.request.body"] == '{"item": 7, "note": "[REDACTED:canary]"}'
    assert a["hostagent.http.request.body.truncated"] is False
    assert a["hostagent.http.response.body"] == '{"item": 7, "note": "[REDACTED:canary]"}'
    assert a["http.request.body.size"] == len(body)
    assert a["hostagent.process.pid"] == flask_pid
    assert a["hostagent.service.name"]
    start, end = a["hostagent.kernel.start_time_unix_nano"], a["hostagent.kernel.end_time_unix_nano"]
    assert start <= end and abs(start - sdk_server.start_unix_ns) < 50_000_000
    # ... and on the SDK's client span
    c = sdk_client.attributes
    assert c["http.request.header.x-secret"] == ("[REDACTED:canary]",)
    assert c["hostagent.http.request.body"] == '{"item": 7, "note": "[REDACTED:canary]"}'
    assert c["hostagent.process.pid"] == flask_pid
    assert c["network.peer.port"] == DOWNSTREAM_PORT
    # the SDK's own attributes that carried the canary (url query) are redacted too
    assert CANARY not in repr(sdk_server.attributes) and CANARY not in sdk_server.name
    # nothing of the canary left the agent, in any exported byte
    assert CANARY.encode() not in collector.recorder.all_bytes()
    # the SDK's export to the receiver is not traffic of the app: no span for it
    assert not [s for s in collector.recorder.spans if s.attributes.get("server.port") == RECEIVER_HTTP]


def _post_order(ref: str, traceparent: str = "") -> None:
    conn = http.client.HTTPConnection("127.0.0.1", FLASK_PORT, timeout=10)
    headers = {"Content-Type": "application/json"} | ({"traceparent": traceparent} if traceparent else {})
    conn.request("POST", f"/order?ref={ref}", body=b"{}", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == b"{}"
    conn.close()


def test_untraced_requests_one_server_span_the_sdks(collector: OtlpGrpcReceiver, apps: dict[str, Server]) -> None:
    """A request without traceparent (curl, a browser, a load balancer): the SDK's root SERVER
    span is the call's only SERVER span in Flask, with the wire detail (before: the agent's span
    of it too, in another trace). The first request makes the Flask process known to have an SDK
    (the README: an SDK process's first requests may stay duplicated)."""
    warm = os.urandom(16).hex()
    _post_order("untraced-warm", traceparent=f"00-{warm}-{os.urandom(8).hex()}-01")
    collector.recorder.wait_for_spans(lambda spans: any(
        s.trace_id == warm and "hostagent.process.pid" in s.attributes for s in spans), 20)  # known now
    refs = [f"untraced-{os.getpid()}-{i}" for i in range(3)]
    for ref in refs:
        _post_order(ref)
    flask_pid = apps["flask"].pid

    def server_spans(ref: str, spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.kind == "SERVER" and ref in repr(s.attributes)
                and (s.resource.get("process.pid") == flask_pid or s.scope_name != "hostagent")]

    collector.recorder.wait_for_spans(lambda spans: all(server_spans(r, spans) for r in refs), 20)
    time.sleep(HOLD_MS / 1000 + 6.5)  # a duplicate would have left by now (sdk_wait_s)
    for ref in refs:
        got = server_spans(ref, collector.recorder.spans)
        assert [s.scope_name for s in got] == ["opentelemetry.instrumentation.flask"], ref
        a = got[0].attributes
        assert not got[0].parent_span_id and a["hostagent.process.pid"] == flask_pid
        assert a["hostagent.kernel.start_time_unix_nano"] <= got[0].start_unix_ns


Request = trace_service_pb2.ExportTraceServiceRequest


def _has_trace(trace_id: str, spans: list[ReceivedSpan]) -> bool:
    return any(s.trace_id == trace_id for s in spans)


def _request(kind: int, trace_id: bytes, span_id: bytes, parent: bytes = b"") -> Request:
    req = trace_service_pb2.ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.parent_span_id, span.kind = trace_id, span_id, parent, kind
    span.name = "probe"
    span.start_time_unix_nano, span.end_time_unix_nano = time.time_ns(), time.time_ns() + 1000
    return req


def test_sdk_export_answered_at_once_and_unmatched_spans_forwarded_after_the_hold(
        collector: OtlpGrpcReceiver, agent: Agent) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{RECEIVER_GRPC}")
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)
    answers, forwarded = [], []
    for _ in range(5):
        trace_id = os.urandom(16)
        wanted = trace_id.hex()
        req = _request(PbSpan.SPAN_KIND_CLIENT, trace_id, os.urandom(8))  # matches nothing on the wire
        t0 = time.monotonic()
        stub.Export(req, timeout=5)
        answers.append(time.monotonic() - t0)
        collector.recorder.wait_for_spans(partial(_has_trace, wanted), 10)
        forwarded.append(time.monotonic() - t0)
    channel.close()
    print(f"\nSDK export answered in max {max(answers) * 1000:.1f} ms; unmatched SDK span forwarded after "
          f"{min(forwarded) * 1000:.0f}-{max(forwarded) * 1000:.0f} ms (hold {HOLD_MS} ms)")
    assert max(answers) < 0.25  # answered at once, not after the hold
    assert all(HOLD_MS / 1000 - 0.05 <= f < HOLD_MS / 1000 + 1.5 for f in forwarded)
    # forwarded unchanged: the span as sent (no wire attributes: nothing matched)
    got = [s for s in collector.recorder.spans if s.name == "probe"]
    assert len(got) == 5 and all(s.attributes == {} for s in got)
    # an INTERNAL span has nothing to wait for: forwarded without the hold
    req = _request(PbSpan.SPAN_KIND_INTERNAL, os.urandom(16), os.urandom(8))
    channel = grpc.insecure_channel(f"127.0.0.1:{RECEIVER_GRPC}")
    t0 = time.monotonic()
    trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=5)
    tid = req.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    collector.recorder.wait_for_spans(lambda spans: any(s.trace_id == tid for s in spans), 10)
    assert time.monotonic() - t0 < 1.0
    channel.close()


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff",  # invalid varint / wire type
    b"\x0a\x05abc",  # length-delimited field cut short
    b"\x0a\x80\x80\x80\x80\x10",  # a length far beyond the body
    os.urandom(64),
])
def test_malformed_otlp_gets_an_error_and_the_receiver_lives_on(
        collector: OtlpGrpcReceiver, agent: Agent, payload: bytes) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{RECEIVER_GRPC}")
    raw = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    try:
        raw(payload, timeout=5)
        decoded_ok = True
    except grpc.RpcError as exc:
        decoded_ok = False
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    if decoded_ok:  # random bytes can happen to be a valid (odd) request; then it must be accepted
        trace_service_pb2.ExportTraceServiceRequest.FromString(payload)
    conn = http.client.HTTPConnection("127.0.0.1", RECEIVER_HTTP, timeout=5)
    conn.request("POST", "/v1/traces", body=payload, headers={"Content-Type": "application/x-protobuf"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == (200 if decoded_ok else 400)
    conn.request("POST", "/v1/traces", body=b"{}", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 415
    conn.close()
    # still alive: a valid request is accepted right after
    good = _request(PbSpan.SPAN_KIND_INTERNAL, os.urandom(16), os.urandom(8))
    trace_service_pb2_grpc.TraceServiceStub(channel).Export(good, timeout=5)
    channel.close()
    assert agent.proc is not None and agent.proc.poll() is None
