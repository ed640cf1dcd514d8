"""HTTP/2 and gRPC through the real daemon: real BPF, real grpcio and nginx peers, a real OTLP receiver.

The gRPC server and each client run as separate processes, so every span's resource names the
process that really made or served the call. One agent (probe "http2" only) serves the module;
tests look only at spans on their own server port, so other traffic on the host (including this
process's OTLP receiver, itself a gRPC server) cannot confuse them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.agent import REPO, Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port
from tests.support.servers import Server, start_grpc_demo, wait_port

pytestmark = pytest.mark.root

GRPC_PORT = free_port()
NGINX_PORT = free_port()
NGINX_UPSTREAM_PORT = free_port()  # HTTP/1 behind the h2c server (probe "http" is off)
NGINX_GRPC_PROXY_PORT = free_port()  # nginx grpc_pass to GRPC_PORT
METHOD = "hostagent.demo.v1.Demo/"
MESSAGE_IN, MESSAGE_OUT = "hostagent.rpc.request.message_count", "hostagent.rpc.response.message_count"
ERROR = 2  # OTLP status code ERROR


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    # payload_bytes 4096, not the default 1024: grpcio writes the 20 concurrent calls' HEADERS and
    # DATA frames in single sendmsg calls of ~1.2 KB; past the captured prefix whole streams are
    # lost (their frames are skipped by length, counted, and their calls never reported).
    a = Agent(tmp_path_factory.mktemp("agent"), receiver.endpoint,
              extra={"probes": {"enabled": ["http2"], "payload_bytes": 4096},
                     "exporter": {"batch_size": 64}}).start()
    yield a
    assert a.stop() == 0


@pytest.fixture(scope="module")
def grpc_server(agent: Agent) -> Iterator[Server]:
    s = start_grpc_demo(GRPC_PORT)
    yield s
    s.stop()


NGINX_H2C_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port} http2;
        root {root}/www;
        location = /hello {{ return 200 "hello\\n"; }}
        location = /teapot {{ return 418; }}
        location = /broken {{ return 503; }}
        # a POST must be read before the answer: nginx 1.22 answering an h2 POST from
        # "return" before the body is in makes curl fail about half the time
        location = /upload {{ proxy_pass http://127.0.0.1:{upstream}/ok; }}
    }}
    server {{
        listen 127.0.0.1:{upstream};
        location = /ok {{ return 200 "ok\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{grpc_proxy} http2;
        location / {{ grpc_pass grpc://127.0.0.1:{grpc}; }}
    }}
}}
"""


@pytest.fixture(scope="module")
def nginx_h2c(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Debian's nginx 1.22 speaks cleartext HTTP/2 with prior knowledge on an ``http2`` listen."""
    root = tmp_path_factory.mktemp("nginx_h2c")
    (root / "www").mkdir()
    (root / "tmp").mkdir()
    (root / "www" / "index.html").write_bytes(b"<h1>hello over h2c</h1>\n")
    conf = root / "nginx.conf"
    conf.write_text(NGINX_H2C_CONF.format(root=root, port=NGINX_PORT, upstream=NGINX_UPSTREAM_PORT,
                                      grpc_proxy=NGINX_GRPC_PROXY_PORT, grpc=GRPC_PORT))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(NGINX_PORT)
    s = Server(proc, NGINX_PORT, "nginx")
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> None:
    receiver.recorder.clear()


# -- helpers ----------------------------------------------------------------------------------------

def on_port(port: int) -> Callable[[ReceivedSpan], bool]:
    def match(s: ReceivedSpan) -> bool:
        a = s.attributes
        return a.get("server.port") == port or a.get("network.peer.port") == port
    return match


def wait_spans(receiver: OtlpGrpcReceiver, port: int, count: int, timeout: float = 20.0) -> list[ReceivedSpan]:
    match = on_port(port)
    try:
        receiver.recorder.wait_for_spans(lambda spans: sum(1 for s in spans if match(s)) >= count, timeout)
    except TimeoutError:
        pass  # the count assertion below says what did arrive
    time.sleep(1.0)  # a span too many must show up as a failure, not be missed
    return [s for s in receiver.recorder.spans if match(s)]


def by_kind(spans: list[ReceivedSpan], kind: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.kind == kind), key=lambda s: s.start_unix_ns)


def spawn_client(body: str) -> int:
    """Runs ``body`` in a fresh Python process with ``stub`` bound to the demo service; returns
    that process's pid (the pid its CLIENT spans must carry)."""
    code = (
        "import grpc\n"
        "from tests.support.grpc_demo import demo_pb2\n"
        "from tests.support.grpc_demo.service import *\n"
        f"channel, stub = stub_for({GRPC_PORT})\n"
        + textwrap.dedent(body)
        + "\nchannel.close()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err.decode(errors="replace")
    return p.pid


def contains(client: ReceivedSpan, server: ReceivedSpan, slack_ns: int = 2_000_000) -> bool:
    """The client span holds the server span. Timestamps are taken at syscall exit, and a reader
    can return from recvmsg a few microseconds before the writer returns from sendmsg."""
    return (client.start_unix_ns - slack_ns <= server.start_unix_ns
            and server.end_unix_ns <= client.end_unix_ns + slack_ns)


def summary(s: ReceivedSpan) -> tuple[object, ...]:
    a = s.attributes
    return (s.name, a.get("rpc.method"), a.get("rpc.response.status_code"), a.get(MESSAGE_IN),
            a.get(MESSAGE_OUT), s.status_code, a.get("error.type"))


# -- gRPC -------------------------------------------------------------------------------------------

def test_every_call_shape_gives_one_client_and_one_server_span(receiver: OtlpGrpcReceiver,
                                                                grpc_server: Server) -> None:
    client_pid = spawn_client("run_every_shape(stub)")
    spans = wait_spans(receiver, GRPC_PORT, 12)
    assert len(spans) == 12, [summary(s) for s in spans]
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert len(server) == 6 and len(client) == 6

    # (span name, rpc.method, status, request messages, response messages, OTLP status, error.type)
    expect_client = [
        (METHOD + "Unary", METHOD + "Unary", "OK", 1, 1, 0, None),
        (METHOD + "ServerStream", METHOD + "ServerStream", "OK", 1, 3, 0, None),
        (METHOD + "ClientStream", METHOD + "ClientStream", "OK", 3, 1, 0, None),
        (METHOD + "Bidi", METHOD + "Bidi", "OK", 2, 2, 0, None),
        (METHOD + "Fail", METHOD + "Fail", "UNAVAILABLE", 1, 0, ERROR, "UNAVAILABLE"),
        (METHOD + "Fail", METHOD + "Fail", "NOT_FOUND", 1, 0, ERROR, "NOT_FOUND"),
    ]
    # v1.44: on the server side NOT_FOUND is the caller's problem, not an error of the server
    expect_server = [*expect_client[:5], (METHOD + "Fail", METHOD + "Fail", "NOT_FOUND", 1, 0, 0, None)]
    assert [summary(s) for s in client] == expect_client
    assert [summary(s) for s in server] == expect_server

    for s in server:
        assert s.resource["process.pid"] == grpc_server.pid
        assert s.attributes["rpc.system.name"] == "grpc"
        assert s.attributes["network.protocol.version"] == "2"
        assert s.attributes["server.address"] == "127.0.0.1"  # from :authority
        assert s.attributes["server.port"] == GRPC_PORT
        # grpcio's AF_INET6 socket names the peer ::ffff:127.0.0.1; spans give the IPv4 form
        assert s.attributes["network.peer.address"] == "127.0.0.1"
        assert s.attributes["network.type"] == "ipv4"
        assert s.attributes["network.peer.port"] != GRPC_PORT
        assert "hostagent.http2.headers_incomplete" not in s.attributes
        assert s.scope_name == "hostagent"
    for c in client:
        assert c.resource["process.pid"] == client_pid
        assert c.attributes["rpc.system.name"] == "grpc"
        assert c.attributes["server.address"] == "127.0.0.1"
        assert c.attributes["server.port"] == GRPC_PORT
        assert c.attributes["network.peer.port"] == GRPC_PORT
        assert c.attributes["network.peer.address"] == "127.0.0.1"
        assert "hostagent.http2.headers_incomplete" not in c.attributes
    # every call travelled on the one connection of the channel
    assert len({s.attributes["network.peer.port"] for s in server}) == 1
    # the grpc-message trailer is the error's status message
    assert client[4].status_message == "failing on purpose: boom"
    assert server[4].status_message == "failing on purpose: boom"
    # each client span contains its server span
    for c, s in zip(client, server):
        assert contains(c, s)


def test_twenty_concurrent_calls_on_one_channel(receiver: OtlpGrpcReceiver, grpc_server: Server) -> None:
    client_pid = spawn_client("run_concurrent_unary(stub, 20)")
    spans = wait_spans(receiver, GRPC_PORT, 40)
    assert len(spans) == 40, [summary(s) for s in spans]
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert len(server) == 20 and len(client) == 20
    unary = (METHOD + "Unary", METHOD + "Unary", "OK", 1, 1, 0, None)
    assert [summary(s) for s in server] == [unary] * 20
    assert [summary(s) for s in client] == [unary] * 20
    assert {s.resource["process.pid"] for s in server} == {grpc_server.pid}
    assert {s.resource["process.pid"] for s in client} == {client_pid}
    assert len({s.attributes["network.peer.port"] for s in server}) == 1  # one HTTP/2 connection
    assert all("hostagent.http2.headers_incomplete" not in s.attributes for s in spans)
    # streams were really in flight together (interleaved on the connection), not one by one
    assert max_in_flight(client) >= 2, [(s.start_unix_ns, s.end_unix_ns) for s in client]


def test_concurrent_calls_on_one_channel_each_link_to_their_own_client(receiver: OtlpGrpcReceiver,
                                                                      grpc_server: Server) -> None:
    """Look-alike calls in flight together on one connection: only the HTTP/2 stream id tells
    which client call a server call answered. Each call names itself in metadata (``x-call``,
    exported as a header attribute) so that the test can tell."""
    spawn_client("""
        calls = [stub.Unary.future(demo_pb2.EchoRequest(text="x"), metadata=(("x-call", f"c{i}"),))
                 for i in range(20)]
        for call in calls:
            call.result(timeout=10)
    """)
    spans = wait_spans(receiver, GRPC_PORT, 40)
    assert len(spans) == 40, [summary(s) for s in spans]
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    assert len(server) == 20 and len(client) == 20
    assert max_in_flight(client) >= 2, [(s.start_unix_ns, s.end_unix_ns) for s in client]
    client_of = {c.attributes["http.request.header.x-call"][0]: c for c in client}
    assert sorted(client_of) == sorted(f"c{i}" for i in range(20))
    for s in server:
        c = client_of[s.attributes["http.request.header.x-call"][0]]
        assert (s.trace_id, s.parent_span_id) == (c.trace_id, c.span_id), s.attributes["http.request.header.x-call"]
    assert {c.parent_span_id for c in client} == {""}  # roots: the client process serves nothing


def test_a_100_kb_message_leaves_the_channels_next_call_whole(receiver: OtlpGrpcReceiver,
                                                             grpc_server: Server) -> None:
    """A call whose request and reply (100 KB each) are far bigger than payload_bytes: each is one
    big write whose middle is not captured, and its end (the reply's trailers) only in the write's
    captured tail. The big call ends with its own status from those trailers (not end_unseen),
    and the channel's next call is decoded whole on both sides: the HPACK tables were kept."""
    spawn_client("run_big_then_small(stub, 100_000)")
    spans = wait_spans(receiver, GRPC_PORT, 4)
    assert len(spans) == 4, [summary(s) for s in spans]
    for side in (by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")):
        big, small = side
        assert summary(big)[:3] == (METHOD + "Unary", METHOD + "Unary", "OK"), summary(big)
        assert "hostagent.http2.end_unseen" not in big.attributes
        assert "hostagent.http2.headers_incomplete" not in big.attributes
        assert summary(small) == (METHOD + "Unary", METHOD + "Unary", "OK", 1, 1, 0, None)
        assert "hostagent.http2.headers_incomplete" not in small.attributes
        assert big.end_unix_ns <= small.start_unix_ns


@pytest.mark.parametrize("at_once", [4, 6])
def test_concurrent_100_kb_calls_then_small_ones_are_each_whole_and_linked(receiver: OtlpGrpcReceiver,
                                                                           grpc_server: Server, at_once: int) -> None:
    """Several 100 KB calls at once on one channel, three times, then three small calls (acceptance
    run). grpcio writes the streams' frames in one big sendmsg (~100 KB per stream), so later
    streams' HEADERS lie in the middle of the write, in neither the captured head nor the tail,
    and the server reads them somewhere inside 8 KB reads. The kernel follows the frames of such
    calls (bpf/capture.c, "HTTP/2 frame chains"): every call has its CLIENT and SERVER span, named
    by its method with its status, no header block missing, each server span its client's child.
    Before, 1-7 calls were lost per run (capture_unpaired) and the channel's later calls were
    pathless ("grpc", hostagent.http2.headers_incomplete) on either end."""
    spawn_client(f"""
        big = demo_pb2.EchoRequest(text="b" * 100_000)
        for r in range(3):
            calls = [stub.Unary.future(big, metadata=(("x-call", f"big{{r}}.{{i}}"),)) for i in range({at_once})]
            for call in calls:
                call.result(timeout=10)
        for i in range(3):
            stub.Unary(demo_pb2.EchoRequest(text="s"), metadata=(("x-call", f"small{{i}}"),))
    """)
    calls = 3 * at_once + 3
    spans = wait_spans(receiver, GRPC_PORT, 2 * calls, timeout=15.0)
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    names = sorted([f"big{r}.{i}" for r in range(3) for i in range(at_once)] + [f"small{i}" for i in range(3)])
    for side in (server, client):
        got = sorted(s.attributes.get("http.request.header.x-call", ["?"])[0] for s in side)
        assert got == names, [summary(s) for s in side]
        for s in side:
            assert summary(s)[:3] == (METHOD + "Unary", METHOD + "Unary", "OK"), summary(s)
            assert "hostagent.http2.headers_incomplete" not in s.attributes, summary(s)
            assert "hostagent.http2.end_unseen" not in s.attributes, summary(s)
    client_of = {c.attributes["http.request.header.x-call"][0]: c for c in client}
    for s in server:
        c = client_of[s.attributes["http.request.header.x-call"][0]]
        assert (s.trace_id, s.parent_span_id) == (c.trace_id, c.span_id), s.attributes["http.request.header.x-call"]


def test_calls_through_an_nginx_grpc_proxy_end_with_their_own_status(receiver: OtlpGrpcReceiver, grpc_server: Server,
                                                                   nginx_h2c: Server) -> None:  # fmt: skip
    """nginx 1.22's grpc_pass writes a reply's DATA to its client as 4105-byte writevs (a 4096-byte
    frame): a few bytes over the kernel's head, whose frame block, read as payload, broke the
    connection's frames; every nginx SERVER span on it then ended as INTERNAL "connection closed
    before the response ended" (acceptance run), the client's CLIENT spans OK."""
    spawn_client(f"""
        channel, stub = stub_for({NGINX_GRPC_PROXY_PORT})
        calls = [stub.Unary.future(demo_pb2.EchoRequest(text="r" * 30_000), metadata=(("x-call", f"p{{i}}"),))
                 for i in range(3)]
        for call in calls:
            call.result(timeout=10)
        stub.Unary(demo_pb2.EchoRequest(text="s"), metadata=(("x-call", "p3"),))
    """)
    proxied = wait_spans(receiver, NGINX_GRPC_PROXY_PORT, 8)
    upstream = wait_spans(receiver, GRPC_PORT, 8)  # nginx's calls to the server: all in before the next test
    for spans, kind in ((proxied, "CLIENT"), (proxied, "SERVER"), (upstream, "CLIENT"), (upstream, "SERVER")):
        side = by_kind(spans, kind)
        got = sorted(s.attributes.get("http.request.header.x-call", ["?"])[0] for s in side)
        assert got == ["p0", "p1", "p2", "p3"], (kind, [summary(s) for s in side])
        for s in side:
            assert summary(s)[:3] + summary(s)[5:] == (METHOD + "Unary", METHOD + "Unary", "OK", 0, None), summary(s)
            assert "hostagent.http2.end_unseen" not in s.attributes


def max_in_flight(spans: list[ReceivedSpan]) -> int:
    edges = sorted([(s.start_unix_ns, 1) for s in spans] + [(s.end_unix_ns, -1) for s in spans])
    depth = best = 0
    for _, step in edges:
        depth += step
        best = max(best, depth)
    return best


def test_traceparent_metadata_joins_the_callers_trace(receiver: OtlpGrpcReceiver, grpc_server: Server) -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    spawn_client(f"""
        stub.Unary(demo_pb2.EchoRequest(text="t"), metadata=(("traceparent", "00-{trace_id}-{parent_id}-01"),))
    """)
    spans = wait_spans(receiver, GRPC_PORT, 2)
    assert len(spans) == 2
    server, client = by_kind(spans, "SERVER")[0], by_kind(spans, "CLIENT")[0]
    assert server.trace_id == trace_id and server.parent_span_id == parent_id
    assert client.trace_id == trace_id
    assert server.name == client.name == METHOD + "Unary"


def test_cancelled_stream_is_an_error_on_the_client(receiver: OtlpGrpcReceiver, grpc_server: Server) -> None:
    spawn_client("run_cancelled_bidi(stub)")
    spans = wait_spans(receiver, GRPC_PORT, 2)
    assert len(spans) == 2, [summary(s) for s in spans]
    client = by_kind(spans, "CLIENT")[0]
    server = by_kind(spans, "SERVER")[0]
    # RST_STREAM(CANCEL) before any grpc-status: the client library reports CANCELLED
    assert client.attributes["rpc.method"] == server.attributes["rpc.method"] == METHOD + "Bidi"
    assert client.attributes["rpc.response.status_code"] == "CANCELLED"
    assert client.attributes["error.type"] == "CANCEL"
    assert client.status_code == ERROR
    assert client.attributes[MESSAGE_IN] == 1 and client.attributes[MESSAGE_OUT] == 1
    assert server.attributes["rpc.response.status_code"] == "CANCELLED"
    assert server.status_code == 0  # CANCELLED is not a server error (v1.44)


def test_deadline_passed_is_deadline_exceeded(receiver: OtlpGrpcReceiver, grpc_server: Server) -> None:
    spawn_client("run_deadline_exceeded(stub)")  # asserts that grpcio itself saw DEADLINE_EXCEEDED
    spans = wait_spans(receiver, GRPC_PORT, 2)
    assert len(spans) == 2, [summary(s) for s in spans]
    # No reply message: the one request message, none back. Which end speaks first is a race: the
    # client's RST_STREAM(CANCEL) at its deadline, or grpcio's server enforcing the same deadline from
    # grpc-timeout with a trailers-only answer (grpc-status 4, no message: response count 0).
    deadline = (METHOD + "Unary", METHOD + "Unary", "DEADLINE_EXCEEDED", 1, ERROR, "DEADLINE_EXCEEDED")
    for s in spans:
        got = summary(s)
        assert got[:4] + got[5:] == deadline, (s.kind, got)
        # the time left when the request went out: under 100 ms when the channel connected first
        (timeout,) = s.attributes["http.request.header.grpc-timeout"]
        assert timeout.endswith("m") and 50 <= int(timeout[:-1]) <= 100, timeout
        by_reset = f"deadline exceeded (grpc-timeout {timeout}): RST_STREAM CANCEL"
        assert (s.status_message, got[4]) in ((by_reset, None), ("Deadline Exceeded", 0)), (s.kind, s.status_message)
        # from the request to the deadline (the time left that grpc-timeout carried, rounded up by the
        # C core), not the server's 500 ms
        assert 0.9 * int(timeout[:-1]) * 1e6 <= s.end_unix_ns - s.start_unix_ns < 400_000_000, s.kind


@pytest.mark.parametrize("true_binary", [1, 0])
def test_binary_metadata_is_exported_as_base64_text(receiver: OtlpGrpcReceiver, grpc_server: Server,
                                                    true_binary: int) -> None:
    """grpcio sends ``-bin`` metadata as NUL + raw bytes to a peer that allows it (SETTINGS
    0xFE03), else as unpadded base64; either way the span carries the base64 text."""
    spawn_client(f"""
        channel, stub = stub_for({GRPC_PORT}, (("grpc.http2.true_binary", {true_binary}),))
        run_binary_metadata(stub)
    """)
    spans = wait_spans(receiver, GRPC_PORT, 2)
    assert len(spans) == 2, [summary(s) for s in spans]
    for s in spans:
        assert s.attributes["rpc.response.status_code"] == "NOT_FOUND"
        assert s.attributes["http.request.header.echo-bin"] == ("//6AAGFiYw",), s.kind  # b"\xff\xfe\x80\x00abc"
        assert s.attributes["http.response.header.grpc-status-details-bin"] == ("//6AAGFiYw",), s.kind


# -- plain HTTP/2 (h2c) ---------------------------------------------------------------------------

def curl_h2(*args: str) -> bytes:
    proc = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                           "-w", "%{http_version} %{http_code}", *args], capture_output=True, timeout=30)
    return proc.stdout


def test_curl_prior_knowledge_against_nginx(receiver: OtlpGrpcReceiver, nginx_h2c: Server) -> None:
    base = f"http://127.0.0.1:{NGINX_PORT}"
    assert curl_h2(f"{base}/hello?x=1") == b"2 200"
    assert curl_h2(f"{base}/index.html") == b"2 200"
    assert curl_h2(f"{base}/teapot") == b"2 418"
    assert curl_h2(f"{base}/broken") == b"2 503"
    assert curl_h2("-X", "POST", "--data-binary", "x" * 3000, f"{base}/upload") == b"2 200"
    spans = wait_spans(receiver, NGINX_PORT, 10)
    assert len(spans) == 10, [(s.kind, s.name, s.attributes.get("url.path")) for s in spans]
    server, client = by_kind(spans, "SERVER"), by_kind(spans, "CLIENT")
    want = [("GET", "/hello", 200), ("GET", "/index.html", 200), ("GET", "/teapot", 418),
            ("GET", "/broken", 503), ("POST", "/upload", 200)]
    for spans_of_kind in (server, client):
        got = [(s.attributes["http.request.method"], s.attributes["url.path"],
                s.attributes["http.response.status_code"]) for s in spans_of_kind]
        assert got == want
        for s in spans_of_kind:
            assert s.name == s.attributes["http.request.method"]
            assert s.attributes["network.protocol.version"] == "2"
            assert s.attributes["network.protocol.name"] == "http"
            assert s.attributes["url.scheme"] == "http"
            assert s.attributes["server.address"] == "127.0.0.1"
            assert s.attributes["server.port"] == NGINX_PORT
            assert "rpc.system.name" not in s.attributes
            assert "hostagent.http2.headers_incomplete" not in s.attributes
        assert spans_of_kind[0].attributes["url.query"] == "x=1"
        assert spans_of_kind[4].attributes["http.request.body.size"] == 3000
    assert all(s.resource["process.pid"] == nginx_h2c.pid for s in server)
    assert all(s.resource["process.executable.name"] == "nginx" for s in server)
    assert all(s.resource["process.executable.name"] == "curl" for s in client)
    assert all(s.attributes["user_agent.original"].startswith("curl/") for s in spans)
    assert server[1].attributes["http.response.body.size"] == len(b"<h1>hello over h2c</h1>\n")
    # 418: an error for the client only; 503: for both (HTTP semantic conventions)
    assert [s.status_code for s in server] == [0, 0, 0, ERROR, 0]
    assert [s.status_code for s in client] == [0, 0, ERROR, ERROR, 0]
    assert client[2].attributes["error.type"] == "418"
    assert server[3].attributes["error.type"] == "503"
    for c, s in zip(client, server):
        assert contains(c, s)
