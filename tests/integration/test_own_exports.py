"""A collector on this host receiving the agent's own exports: real BPF, the agent exporting
traces and metrics (every second) over OTLP/gRPC to a real receiver in this process, with the
HTTP/2 probe on. The receiver's side of each export is an HTTP/2 server call; before the fix its
span was exported in turn, each export made the next one's, and the spans never stopped coming on
an idle host (measured: ~0.5 spans/s, growing by one per export, for as long as the agent ran)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.servers import Server, start_http_app
from tests.unit.admin_harness import cli

pytestmark = pytest.mark.root
APP_PORT = 19531
EXPORT_METHODS = ("opentelemetry.proto.collector.trace.v1.TraceService/Export",
                  "opentelemetry.proto.collector.metrics.v1.MetricsService/Export")


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"), receiver.endpoint, extra={
        "probes": {"enabled": ["http", "http2"]},
        "exporter": {"metrics": True, "metrics_interval_s": 1},
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


def own_exports_seen(agent: Agent) -> int:
    import json

    out = cli("--socket", str(agent.workdir / "run" / "admin.sock"), "status", "-o", "json")
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["layering"].get("counters", {}).get("agent_export_calls", 0))


def test_the_agents_exports_to_a_local_collector_make_no_spans(agent: Agent, app: Server,
                                                                receiver: OtlpGrpcReceiver) -> None:
    recorder = receiver.recorder
    for n in range(3):  # the apps' traffic: spans to export
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://127.0.0.1:{APP_PORT}/own-{n}"], capture_output=True, timeout=30)
        assert out.stdout == b"200"
    recorder.wait_for_spans(lambda spans: sum(1 for s in spans if s.attributes.get("url.path") == "/own-2") == 2,
                            timeout=15)
    deadline = time.monotonic() + 20
    while recorder.metric_requests < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorder.metric_requests >= 3, "the agent exported no metrics"
    time.sleep(1.5)  # what the last exports made is exported too
    requests_before, seen_before = recorder.trace_requests + recorder.metric_requests, own_exports_seen(agent)
    time.sleep(4)  # idle but for the agent's own metric exports, one a second
    requests = recorder.trace_requests + recorder.metric_requests - requests_before
    assert requests >= 3
    time.sleep(0.5)  # the last of them through the agent's pipeline
    own = [s for s in recorder.spans if s.attributes.get("rpc.method") in EXPORT_METHODS
           or s.attributes.get("server.port") == receiver.port]
    assert own == [], [(s.name, s.kind, s.attributes.get("server.port")) for s in own]
    # every export the receiver answered meanwhile was seen, and counted, not traced
    assert own_exports_seen(agent) - seen_before >= requests
    app_spans = sorted((s.kind, s.attributes.get("url.path")) for s in recorder.spans
                       if str(s.attributes.get("url.path", "")).startswith("/own-"))
    assert app_spans == sorted((k, f"/own-{n}") for n in range(3) for k in ("CLIENT", "SERVER"))
