"""Servers whose connections are accepted by one process and served by another, the socket handed
over a Unix socket (SCM_RIGHTS): Node's ``cluster`` in round-robin mode (the default on Linux, so
every PM2 cluster-mode app) and a Python parent that accepts and passes each connection to a child
(``socket.send_fds``), as systemd's ``Accept=yes`` does. Real BPF on the socket data path, curl as
the client, spans at a real OTLP receiver.

Before: the worker's (pid, fd) had no socket entry in the kernel, so its calls were never captured:
curl's CLIENT span and no SERVER span. Now a data call on an inet socket the process has no entry
for adopts the socket from the kernel's own record of it (its ends included), so the worker's
SERVER span is there, in the worker's process, with its peer, and linked to curl's span."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.dns_server import build_query
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port

pytestmark = pytest.mark.root

# The parent accepts; a child it started before any connection serves each one it is passed.
PYTHON_SERVER = textwrap.dedent("""
    import os, socket, sys
    port, host = int(sys.argv[1]), sys.argv[2]
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:
        parent_end.close()
        while True:
            _, fds, _, _ = socket.recv_fds(child_end, 1, 1)
            if not fds:
                os._exit(0)
            with socket.socket(fileno=fds[0]) as conn:
                data = b""
                while b"\\r\\n\\r\\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
    child_end.close()
    listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    print(child, flush=True)
    while True:
        conn, _ = listener.accept()
        socket.send_fds(parent_end, [b"c"], [conn.fileno()])
        conn.close()  # the child's copy is the connection now
""")

# Node's cluster module, round-robin: the primary accepts and hands each connection to a worker.
NODE_SERVER = textwrap.dedent("""
    const cluster = require('cluster');
    const http = require('http');
    const port = parseInt(process.argv[2]);
    const host = process.argv[3] || undefined;  // none: '::' (and 0.0.0.0), as listen(port)
    cluster.schedulingPolicy = cluster.SCHED_RR;
    if (cluster.isPrimary) {
      let up = 0;
      for (let i = 0; i < 2; i++) cluster.fork().on('listening', () => { if (++up === 2) console.log('ready'); });
    } else {
      http.createServer((req, res) => { res.end('hello from ' + process.pid + '\\n'); }).listen(port, host);
    }
""")


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent-fdpass"), receiver.endpoint,
              extra={"probes": {"enabled": ["http", "dns"], "data_hooks": "socket"}})
    try:
        a.start()
        yield a
    finally:
        assert a.stop() == 0


def _curl(port: int, path: str, host: str = "127.0.0.1") -> tuple[bytes, int]:
    url = f"http://[{host}]:{port}{path}" if ":" in host else f"http://{host}:{port}{path}"
    out = subprocess.run(["curl", "-s", "-g", "-w", "\n%{http_code} %{local_port}", url],
                         capture_output=True, timeout=30)
    body, status = out.stdout.rsplit(b"\n", 1)
    code, local_port = status.split()
    assert code == b"200", out
    return body, int(local_port)


def _spans_of(receiver: OtlpGrpcReceiver, paths: set[str]) -> list[ReceivedSpan]:
    def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
        return [s for s in spans if s.attributes.get("url.path") in paths]

    receiver.recorder.wait_for_spans(lambda spans: len(mine(spans)) >= 2 * len(paths), timeout=20)
    time.sleep(0.5)  # a span too many must show up as a failure
    return mine(receiver.recorder.spans)


def _peer_service(span: ReceivedSpan) -> dict[str, object]:
    return {k: span.attributes[k] for k in ("service.peer.name", "peer.service") if k in span.attributes}


def _assert_served(spans: list[ReceivedSpan], path: str, client_port: int, server_port: int,
                   worker: int, client_addr: str = "127.0.0.1") -> None:
    mine = [s for s in spans if s.attributes["url.path"] == path]
    assert sorted(s.kind for s in mine) == ["CLIENT", "SERVER"], mine
    client = next(s for s in mine if s.kind == "CLIENT")
    served = next(s for s in mine if s.kind == "SERVER")
    assert served.resource["process.pid"] == worker, (path, served.resource)
    assert client.resource["process.pid"] != worker
    assert (served.attributes.get("network.peer.address"), served.attributes.get("network.peer.port"),
            served.attributes.get("client.address"), served.attributes.get("server.port"),
            served.attributes.get("http.response.status_code")) == (
        client_addr, client_port, client_addr, server_port, 200), (path, served.attributes)
    assert (served.trace_id, served.parent_span_id) == (client.trace_id, client.span_id), (path, served)
    name = served.resource["service.name"]
    assert _peer_service(client) == {"service.peer.name": name, "peer.service": name}, (path, client.attributes)


# IPv6: the peer's and the local address are past the head of struct sock_common, at offsets the
# loader finds in the kernel's BTF; before, a true IPv6 peer had no address (no network.peer.*,
# client.address, peer service, and the client's span not linked).
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_python_parent_passes_connections_to_a_child(agent: Agent, receiver: OtlpGrpcReceiver, host: str) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", PYTHON_SERVER, str(port), host], stdout=subprocess.PIPE,
                              start_new_session=True)
    tag = "v6" if ":" in host else "v4"
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        ports = {f"/fdpass-py-{tag}-{n}": _curl(port, f"/fdpass-py-{tag}-{n}", host)[1] for n in range(3)}
        spans = _spans_of(receiver, set(ports))
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the parent and its child
        server.wait()
    assert len(spans) == 6, spans
    for path, client_port in ports.items():
        _assert_served(spans, path, client_port, port, child, host)


# ("", "::1"): the server on '::' (listen(port), as a Node app usually does), the client on ::1
# (Node 20 resolves localhost to ::1 first).
@pytest.mark.skipif(shutil.which("node") is None, reason="no node")
@pytest.mark.parametrize(("listen", "host"), [("127.0.0.1", "127.0.0.1"), ("", "::1")])
def test_node_cluster_workers(agent: Agent, receiver: OtlpGrpcReceiver, tmp_path: Path, listen: str,
                              host: str) -> None:
    port = free_port()
    script = tmp_path / "cluster.js"
    script.write_text(NODE_SERVER)
    server = subprocess.Popen(["node", str(script), str(port), listen], stdout=subprocess.PIPE,
                              start_new_session=True)
    tag = "v6" if ":" in host else "v4"
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        served_by: dict[str, tuple[int, int]] = {}
        for n in range(4):
            body, client_port = _curl(port, f"/fdpass-node-{tag}-{n}", host)
            served_by[f"/fdpass-node-{tag}-{n}"] = (client_port, int(body.split()[-1]))  # "hello from <pid>"
        spans = _spans_of(receiver, set(served_by))
    finally:
        os.killpg(server.pid, signal.SIGKILL)  # the primary and its workers
        server.wait()
    assert len({pid for _, pid in served_by.values()}) == 2  # round-robin: both workers served
    assert len(spans) == 8, spans
    for path, (client_port, worker) in served_by.items():
        _assert_served(spans, path, client_port, port, worker, host)


# A datagram server handed its socket, as systemd's socket activation with Accept=no (a DNS server's
# port 53): the parent binds an unconnected UDP socket and passes it to a child started before, which
# answers each query (recvfrom/sendto) with one A record, 127.0.0.5. Before, an unconnected datagram
# socket (skc_state CLOSE) was not adopted, raw and ICMP sockets having that state too: no SERVER
# span. Now sk_type and sk_protocol (offsets from BTF) say it is UDP.
DNS_SERVER = textwrap.dedent("""
    import os, socket, struct, sys
    port, host = int(sys.argv[1]), sys.argv[2]
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:
        parent_end.close()
        _, fds, _, _ = socket.recv_fds(child_end, 1, 1)
        with socket.socket(fileno=fds[0]) as s:
            while True:
                q, peer = s.recvfrom(512)
                answer = b"\\xc0\\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 5])
                s.sendto(q[:2] + b"\\x81\\x80" + q[4:6] + b"\\x00\\x01\\x00\\x00\\x00\\x00" + q[12:] + answer, peer)
    child_end.close()
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    socket.send_fds(parent_end, [b"s"], [s.fileno()])
    s.close()
    print(child, flush=True)
    parent_end.recv(1)  # until killed
""")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_socket_passed_to_a_child(agent: Agent, receiver: OtlpGrpcReceiver, host: str) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", DNS_SERVER, str(port), host], stdout=subprocess.PIPE,
                              start_new_session=True)
    tag = "v6" if ":" in host else "v4"
    names = [f"q{n}.fdpass-{tag}.test" for n in range(3)]
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(5)
            for qid, name in enumerate(names, 0x5A01):
                c.sendto(build_query(qid, name, 1), (host, port))
                data, _ = c.recvfrom(4096)
                assert data[:2] == struct.pack("!H", qid)
            client_port = c.getsockname()[1]

        def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.attributes.get("dns.question.name") in names]

        receiver.recorder.wait_for_spans(lambda spans: len(mine(spans)) >= 6, timeout=20)
        time.sleep(0.5)  # a span too many must show up as a failure
        spans = mine(receiver.recorder.spans)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    served = sorted((s for s in spans if s.kind == "SERVER"), key=lambda s: s.start_unix_ns)
    clients = sorted((s for s in spans if s.kind == "CLIENT"), key=lambda s: s.start_unix_ns)
    assert len(spans) == 6 and len(served) == 3, spans
    assert [s.resource["process.pid"] for s in clients] == [os.getpid()] * 3
    for name, s in zip(names, served):
        a = s.attributes
        assert s.resource["process.pid"] == child
        assert (s.name, a["dns.question.name"], a.get("hostagent.dns.answer_count"), a.get("dns.answers"),
                a["network.transport"], a["network.peer.address"], a["network.peer.port"],
                a["client.address"]) == ("DNS A", name, 1, ("127.0.0.5",), "udp", host, client_port, host), s
