"""`hostagentctl capture` and the status layering section against the real daemon: real BPF,
curl POSTing to a real HTTP server, spans at a real OTLP receiver, SDK spans sent to the agent's
real OTLP receiver. Each change is checked by what the next exported spans carry."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app
from tests.unit.admin_harness import cli, world_dir

pytestmark = pytest.mark.root
APP_PORT, AGENT_OTLP_PORT = free_port(), free_port()
APP = "tests.support.http_app"
BODY = "capture-me-19520"


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver) -> Iterator[Agent]:
    with world_dir() as d:
        a = Agent(d / "agent", receiver.endpoint, extra={
            "exporter": {"batch_size": 16},
            "admin": {"group": "hostagent-test-absent"},
            "receiver": {"grpc": f"127.0.0.1:{AGENT_OTLP_PORT}", "hold_ms": 300},
        })
        try:
            a.start()
            yield a
        finally:
            assert a.stop() == 0


@pytest.fixture(scope="module")
def app(agent: Agent) -> Iterator[Server]:
    s = start_http_app(APP_PORT)
    yield s
    s.stop()


def ctl_json(agent: Agent, *args: str):
    out = cli("--socket", str(agent.workdir / "run" / "admin.sock"), *args, "-o", "json")
    assert out.returncode == 0, out.stderr + agent.log()[-3000:]
    return json.loads(out.stdout)


def post(receiver: OtlpGrpcReceiver, path: str) -> tuple[ReceivedSpan, ReceivedSpan]:
    """curl POSTs BODY with a header of our own; returns (the app's SERVER span, curl's CLIENT span)."""
    receiver.recorder.clear()
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Probe: p1", "--data-binary", BODY,
         f"http://127.0.0.1:{APP_PORT}{path}"],
        capture_output=True, timeout=30,
    )
    assert out.stdout == b"200"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        spans = [s for s in receiver.recorder.spans if s.attributes.get("url.path") == path]
        if len(spans) >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.5)  # a span too many must show up as a failure
    spans = [s for s in receiver.recorder.spans if s.attributes.get("url.path") == path]
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER"], spans
    server = next(s for s in spans if s.kind == "SERVER")
    client = next(s for s in spans if s.kind == "CLIENT")
    assert server.resource["service.name"] == APP
    return server, client


def headers_of(span: ReceivedSpan) -> dict[str, object]:
    return {k: v for k, v in span.attributes.items() if k.startswith(("http.request.header.", "http.response.header."))}


def test_capture_set_changes_the_next_spans_and_reset_restores_defaults(
    agent: Agent, app: Server, receiver: OtlpGrpcReceiver
) -> None:
    defaults = {"headers": True, "bodies": False, "body_max_bytes": 1024, "raw_sql": False, "overrides": []}
    assert ctl_json(agent, "capture", "get") == defaults
    server, client = post(receiver, "/before")
    assert server.attributes["http.request.header.x-probe"] == ("p1",)
    assert server.attributes["http.request.body.size"] == len(BODY)
    assert "hostagent.http.request.body" not in server.attributes  # bodies are off by default

    ctl_json(agent, "capture", "set", "--bodies", "on", "--service", APP)
    server, client = post(receiver, "/bodies-on")
    assert server.attributes["hostagent.http.request.body"] == BODY
    assert server.attributes["hostagent.http.request.body.truncated"] is False
    assert server.attributes["hostagent.http.response.body"] == BODY  # the app echoes it
    assert "hostagent.http.request.body" not in client.attributes  # curl is another service

    ctl_json(agent, "capture", "set", "--headers", "off")
    server, client = post(receiver, "/headers-off")
    assert headers_of(server) == {} and headers_of(client) == {}
    assert server.attributes["hostagent.http.request.body"] == BODY  # the override still applies

    assert ctl_json(agent, "capture", "set", "--body-max", "7", "--service", APP)["overrides"] == [
        {"service": APP, "protocol": "*", "bodies": True, "body_max_bytes": 7}]
    server, _ = post(receiver, "/short")
    assert server.attributes["hostagent.http.request.body"] == BODY[:7]
    assert server.attributes["hostagent.http.request.body.truncated"] is True

    status = ctl_json(agent, "status")
    assert status["runtime_overrides"] is True and status["capture"]["headers"] is False
    assert ctl_json(agent, "reset")["reset"] == ["capture"]
    assert ctl_json(agent, "capture", "get") == defaults
    assert not (agent.workdir / "state" / "runtime.json").exists()
    server, client = post(receiver, "/after-reset")
    assert server.attributes["http.request.header.x-probe"] == ("p1",)
    assert "hostagent.http.request.body" not in server.attributes
    audit = [json.loads(line) for line in (agent.workdir / "state" / "audit.log").read_text().splitlines()]
    assert [(a["action"], a["ok"]) for a in audit] == [("capture.set", True)] * 3 + [("reset", True)]


def test_capture_survives_a_restart(agent: Agent, app: Server, receiver: OtlpGrpcReceiver) -> None:
    ctl_json(agent, "capture", "set", "--bodies", "on", "--body-max", "4")
    assert agent.stop() == 0
    agent.start()
    try:
        assert ctl_json(agent, "capture", "get")["bodies"] is True
        server, client = post(receiver, "/after-restart")
        assert server.attributes["hostagent.http.request.body"] == BODY[:4]
        assert client.attributes["hostagent.http.request.body"] == BODY[:4]  # the base applies to all
    finally:
        assert ctl_json(agent, "reset")["reset"] == ["capture"]


def test_a_larger_body_max_reaches_an_open_keep_alive_connection(
    agent: Agent, app: Server, receiver: OtlpGrpcReceiver
) -> None:
    """A pooled keep-alive connection stays open while body_max_bytes is raised: its next request's
    body is kept up to the new limit, as raw_sql applies to the next call (the parsers kept the
    limit of the connection's start until it closed: 1024 bytes and truncated, however large the
    setting)."""
    body = (BODY * 200).encode()[:3000]
    conn = http.client.HTTPConnection("127.0.0.1", APP_PORT, timeout=10)

    def server_span(path: str) -> ReceivedSpan:
        receiver.recorder.clear()
        conn.request("POST", path, body=body)
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, body)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            spans = [s for s in receiver.recorder.spans if s.attributes.get("url.path") == path and s.kind == "SERVER"]
            if spans:
                return spans[0]
            time.sleep(0.1)
        raise AssertionError(f"no SERVER span for {path}: {agent.log()[-2000:]}")

    try:
        ctl_json(agent, "capture", "set", "--bodies", "on")
        before = server_span("/pooled-1024")
        assert before.attributes["hostagent.http.request.body"] == body[:1024].decode()
        assert before.attributes["hostagent.http.request.body.truncated"] is True
        assert ctl_json(agent, "capture", "set", "--body-max", "4096")["body_max_bytes"] == 4096
        for path in ("/pooled-4096", "/pooled-4096-again"):
            after = server_span(path)
            assert after.attributes["hostagent.http.request.body"] == body.decode()
            assert after.attributes["hostagent.http.request.body.truncated"] is False
            assert after.attributes["hostagent.http.response.body"] == body.decode()  # the app echoes it
            assert after.attributes["network.peer.port"] == before.attributes["network.peer.port"]  # one connection
    finally:
        conn.close()
        assert ctl_json(agent, "reset")["reset"] == ["capture"]


def test_status_shows_layering_and_capture_losses(agent: Agent, receiver: OtlpGrpcReceiver) -> None:
    before = ctl_json(agent, "status")["layering"]
    assert (before["receiver_enabled"], before["linking_enabled"]) == (True, True)
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for n, kind in ((1, PbSpan.SPAN_KIND_INTERNAL), (2, PbSpan.SPAN_KIND_CLIENT)):
        spans.add(trace_id=bytes(15) + b"\x07", span_id=bytes(7) + bytes([n]), kind=kind, name=f"sdk-{n}",
                  start_time_unix_nano=1, end_time_unix_nano=2)
    with grpc.insecure_channel(f"127.0.0.1:{AGENT_OTLP_PORT}") as channel:
        TraceServiceStub(channel).Export(req, timeout=5)
    # the CLIENT span waits hold_ms for a wire call that never comes, then the request is forwarded
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = ctl_json(agent, "status")["layering"]
        if int(after["requests_forwarded"]) > int(before["requests_forwarded"]):
            break
        time.sleep(0.1)
    delta = {k: int(after[k]) - int(before[k]) for k in ("sdk_requests_received", "sdk_spans_received",
                                                        "requests_forwarded", "sdk_spans_enriched")}
    assert delta == {"sdk_requests_received": 1, "sdk_spans_received": 2, "requests_forwarded": 1,
                     "sdk_spans_enriched": 0}
    assert int(after["counters"]["sdk_spans_unmatched"]) - int(before["counters"].get("sdk_spans_unmatched", 0)) == 1
    assert after["sdk_spans_held"] == "0"  # (agent spans may be held: the agent sees the whole host)
    table = cli("--socket", str(agent.workdir / "run" / "admin.sock"), "status").stdout
    assert "\ncapture losses: " in table
    assert "\nlayering\n  receiver: on   linking: on\n" in table
    received = f"\n  sdk spans received:  {after['sdk_spans_received']} (in {after['sdk_requests_received']} requests)"
    assert received + "\n" in table, table
