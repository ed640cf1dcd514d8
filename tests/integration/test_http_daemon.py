"""The real daemon, real BPF, real servers and clients on loopback, spans at a real OTLP receiver.

One agent serves the whole module (bcc compiles once); each test filters the spans of its own
server port, so traffic of other processes on the host cannot confuse it.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_http_app, start_nginx

pytestmark = pytest.mark.root

APP_PORT = free_port()
NGINX_PORT = free_port()


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"), receiver.endpoint,
              extra={"exporter": {"batch_size": 64, "metrics_interval_s": 1}}).start()
    yield a
    assert a.stop() == 0


@pytest.fixture(scope="module")
def app(agent: Agent) -> Iterator[Server]:
    s = start_http_app(APP_PORT)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def nginx(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_nginx(tmp_path_factory.mktemp("nginx"), NGINX_PORT)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> None:
    receiver.recorder.clear()


def on_port(port: int) -> callable[[ReceivedSpan], bool]:  # type: ignore[valid-type]
    def match(s: ReceivedSpan) -> bool:
        a = s.attributes
        return a.get("server.port") == port or a.get("network.peer.port") == port
    return match


def wait_spans(receiver: OtlpGrpcReceiver, port: int, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
    match = on_port(port)
    receiver.recorder.wait_for_spans(lambda spans: sum(1 for s in spans if match(s)) >= count, timeout)
    # a little longer: a span too many must show up as a failure, not be missed
    time.sleep(1.0)
    return [s for s in receiver.recorder.spans if match(s)]


def by_kind(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_unix_ns)


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
                          capture_output=True, timeout=30)
    return proc


def test_curl_get_makes_one_client_and_one_server_span(receiver: OtlpGrpcReceiver, app: Server) -> None:
    out = curl(f"http://127.0.0.1:{APP_PORT}/sleep?ms=200&x=1")
    assert out.stdout == b"200"
    spans = wait_spans(receiver, APP_PORT, 2)
    assert len(spans) == 2, spans
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert len(server) == 1 and len(client) == 1
    s, c = server[0], client[0]
    for span in (s, c):
        assert span.name == "GET"
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["url.path"] == "/sleep"
        assert span.attributes["url.query"] == "ms=200&x=1"
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["network.protocol.version"] == "1.1"
        assert span.status_code == 0
        assert span.scope_name == "hostagent"
        # the server sleeps 200 ms: both spans contain it, and neither is absurdly long
        assert 200_000_000 <= span.end_unix_ns - span.start_unix_ns < 2_000_000_000
    assert s.resource["process.pid"] == app.pid
    assert s.attributes["server.port"] == APP_PORT
    assert s.attributes["client.address"] == "127.0.0.1"
    assert s.attributes["network.peer.address"] == "127.0.0.1"
    assert s.attributes["url.scheme"] == "http"
    assert c.attributes["server.address"] == "127.0.0.1"
    assert c.attributes["server.port"] == APP_PORT
    assert c.attributes["network.peer.port"] == APP_PORT
    assert c.attributes["user_agent.original"].startswith("curl/")
    assert c.resource["process.executable.name"] == "curl"
    assert c.resource["telemetry.sdk.name"] == "hostagent"
    # the server's client port is the client's own port: the two ends of one connection
    assert s.attributes["network.peer.port"] != APP_PORT
    # the client span starts before the server span and ends after it
    assert c.start_unix_ns <= s.start_unix_ns and s.end_unix_ns <= c.end_unix_ns + 1_000_000


def test_keep_alive_connection_gives_one_span_pair_per_request(receiver: OtlpGrpcReceiver, app: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", APP_PORT, timeout=10)
    statuses = []
    for method, path, body in (("GET", "/a?n=1", None), ("POST", "/create", b"x" * 3000),
                               ("GET", "/status/503", None), ("HEAD", "/h", None)):
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        resp.read()
        statuses.append(resp.status)
    conn.close()
    assert statuses == [200, 201, 503, 200]
    spans = wait_spans(receiver, APP_PORT, 8)
    assert len(spans) == 8
    for kind in ("SERVER", "CLIENT"):
        got = [(s.attributes["http.request.method"], s.attributes["url.path"],
                s.attributes["http.response.status_code"]) for s in by_kind(spans, kind)]
        assert got == [("GET", "/a", 200), ("POST", "/create", 201), ("GET", "/status/503", 503),
                       ("HEAD", "/h", 200)]
    client = by_kind(spans, "CLIENT")
    assert all(s.resource["process.pid"] == os.getpid() for s in client)
    post = [s for s in spans if s.attributes["http.request.method"] == "POST"]
    assert all(s.attributes["http.request.body.size"] == 3000 for s in post)
    errors = {s.kind: s for s in spans if s.attributes["http.response.status_code"] == 503}
    assert errors["SERVER"].status_code == 2 and errors["CLIENT"].status_code == 2
    assert errors["SERVER"].attributes["error.type"] == "503"


def test_traceparent_is_honoured_by_the_server_span(receiver: OtlpGrpcReceiver, app: Server) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    out = curl("-H", f"traceparent: 00-{trace_id}-{parent_id}-01", f"http://127.0.0.1:{APP_PORT}/traced")
    assert out.stdout == b"200"
    spans = wait_spans(receiver, APP_PORT, 2)
    server = by_kind(spans, "SERVER")[0]
    assert server.trace_id == trace_id
    assert server.parent_span_id == parent_id
    assert server.span_id != parent_id
    client = by_kind(spans, "CLIENT")[0]
    assert client.trace_id == trace_id


def test_requests_without_traceparent_get_fresh_traces(receiver: OtlpGrpcReceiver, app: Server) -> None:
    for _ in range(2):
        curl(f"http://127.0.0.1:{APP_PORT}/fresh")
    spans = wait_spans(receiver, APP_PORT, 4)
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert len(server) == 2 and len(client) == 2
    # each curl starts its own trace (a root CLIENT span)...
    assert client[0].trace_id != client[1].trace_id
    assert all(c.parent_span_id == "" and len(c.trace_id) == 32 and c.trace_id != "0" * 32 for c in client)
    # ...and both ends are on this host, so the server span is the child of its client span
    for c, s in zip(client, server):
        assert (s.trace_id, s.parent_span_id) == (c.trace_id, c.span_id)


def test_nginx_static_file_and_404(receiver: OtlpGrpcReceiver, nginx: Server) -> None:
    assert curl(f"http://127.0.0.1:{NGINX_PORT}/index.html").stdout == b"200"
    assert curl(f"http://127.0.0.1:{NGINX_PORT}/missing").stdout == b"404"
    spans = wait_spans(receiver, NGINX_PORT, 4)
    assert len(spans) == 4
    server = by_kind(spans, "SERVER")
    assert [(s.attributes["url.path"], s.attributes["http.response.status_code"]) for s in server] == [
        ("/index.html", 200), ("/missing", 404)]
    assert all(s.resource["process.pid"] == nginx.pid for s in server)
    assert all(s.resource["process.executable.name"] == "nginx" for s in server)
    assert server[0].attributes["http.response.body.size"] == len(b"<h1>hello</h1>\n")
    # 404: not an error for the server, an error for the client (HTTP semantic conventions)
    assert server[1].status_code == 0
    client_404 = [s for s in by_kind(spans, "CLIENT") if s.attributes["http.response.status_code"] == 404]
    assert client_404[0].status_code == 2 and client_404[0].attributes["error.type"] == "404"


@pytest.mark.parametrize(("option", "version"), [("--http1.0", "1.0"), ("--http1.1", "1.1")])
def test_protocol_version_is_the_requests(receiver: OtlpGrpcReceiver, nginx: Server, option: str,
                                          version: str) -> None:
    """nginx answers an HTTP/1.0 request with its own "HTTP/1.1 200 OK": the exchange's version is
    the one the client spoke, on both spans."""
    out = subprocess.run(["curl", "-s", option, "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                          f"http://127.0.0.1:{NGINX_PORT}/index.html"], capture_output=True, timeout=30)
    assert out.stdout == b"1.1 200"  # what curl read: the response's status line
    spans = wait_spans(receiver, NGINX_PORT, 2)
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER"]
    assert [s.attributes["network.protocol.version"] for s in spans] == [version, version]


def test_large_response_body_spread_over_many_reads(receiver: OtlpGrpcReceiver, nginx: Server,
                                                    tmp_path: Path) -> None:
    body = os.urandom(200_000)
    (Path(nginx.proc.args[2]).parent / "www" / "big.bin").write_bytes(body)
    assert curl(f"http://127.0.0.1:{NGINX_PORT}/big.bin").stdout == b"200"
    spans = wait_spans(receiver, NGINX_PORT, 2)
    assert len(spans) == 2
    assert all(s.attributes["http.response.body.size"] == 200_000 for s in spans)


def test_large_response_sent_by_sendfile(receiver: OtlpGrpcReceiver, agent: Agent,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """1 MiB by sendfile(2): the bytes never pass through nginx's memory, and on the socket-layer
    data path the kernel reports them in many chunks (one per splice into the socket), each a
    size-only event. Both spans still carry the whole body's size and end with its last byte."""
    port = free_port()
    server = start_nginx(tmp_path_factory.mktemp("nginx-sendfile"), port, sendfile=True)
    try:
        (Path(server.proc.args[2]).parent / "www" / "one.bin").write_bytes(os.urandom(1 << 20))
        assert curl(f"http://127.0.0.1:{port}/one.bin").stdout == b"200"
        spans = wait_spans(receiver, port, 2)
    finally:
        server.stop()
    assert sorted(s.kind for s in spans) == ["CLIENT", "SERVER"]
    assert all(s.attributes["http.response.status_code"] == 200 for s in spans)
    assert all(s.attributes["http.response.body.size"] == 1 << 20 for s in spans)


def _server_counts(points: list) -> dict[int, int]:  # type: ignore[type-arg]
    """Newest cumulative count per status of the app's DELETE series of http.server.request.duration
    (DELETE: no other test sends it, and the agent sees every process on the host)."""
    counts: dict[int, int] = {}
    for p in points:  # in arrival order: later points of a series overwrite earlier ones
        if (p.name == "http.server.request.duration" and p.attributes.get("service.name") == "tests.support.http_app"
                and p.attributes.get("http.request.method") == "DELETE"):
            counts[p.attributes["http.response.status_code"]] = p.count
    return counts


def test_red_metrics_and_self_metrics_are_exported(receiver: OtlpGrpcReceiver, app: Server) -> None:
    # metrics are cumulative and earlier tests of this module used the app: measure the increase
    time.sleep(2.5)  # > 2 export intervals: everything before this test has been reported
    before = _server_counts(receiver.recorder.points)
    receiver.recorder.clear()
    for i in range(3):
        assert curl("-X", "DELETE", f"http://127.0.0.1:{APP_PORT}/metrics-{i % 2}").stdout == b"200"
    assert curl("-X", "DELETE", f"http://127.0.0.1:{APP_PORT}/status/500").stdout == b"500"
    want = {200: before.get(200, 0) + 3, 500: before.get(500, 0) + 1}

    def complete(points: list) -> bool:  # type: ignore[type-arg]
        counts = _server_counts(points)
        return all(counts.get(k, 0) >= v for k, v in want.items()) and any(
            p.name == "hostagent.dropped" for p in points)

    try:
        points = receiver.recorder.wait_for_points(complete, timeout=20)
    except TimeoutError:
        server = [p.attributes for p in receiver.recorder.points if p.name == "http.server.request.duration"]
        raise AssertionError(f"want {want}, got {_server_counts(receiver.recorder.points)}; {server[-3:]}") from None
    time.sleep(1.5)  # one more interval: a count past the expected one must show up
    assert _server_counts(receiver.recorder.points) == want
    server = [p for p in points if p.name == "http.server.request.duration"
              and p.attributes.get("http.request.method") == "DELETE"]
    ok = next(p for p in server if p.attributes["http.response.status_code"] == 200)
    assert ok.attributes["service.name"] == "tests.support.http_app"
    assert ok.unit == "s"
    failed = next(p for p in server if p.attributes["http.response.status_code"] == 500)
    assert failed.attributes["error.type"] == "500"
    drops = {p.attributes["cause"] for p in points if p.name == "hostagent.dropped"}
    assert {"kernel_ringbuf_full", "queue_full", "export_failed"} <= drops
