"""A server whose accept() names no peer (``accept(fd, NULL, NULL)``: libuv does this, so every
Node.js server): real BPF, curl against a real server in another process that accepts that way
(through libc, as libuv does), spans at a real OTLP receiver, on both data paths.

Before: the server spans said ``network.peer.address: 0.0.0.0`` / ``client.address: 0.0.0.0``
and were linked to no client span. Now the socket data path takes the peer from the TCP handshake,
kept by the socket's address, and the spans are linked to their local clients; the syscall path
has no socket address at data time: no peer there, never a made-up one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port

pytestmark = pytest.mark.root
PORT = free_port()

SERVER = textwrap.dedent(f"""
    import ctypes, socket
    libc = ctypes.CDLL(None, use_errno=True)
    listener = socket.create_server(("127.0.0.1", {PORT}))
    print("ready", flush=True)
    while True:
        fd = libc.accept(listener.fileno(), None, None)  # no sockaddr, as libuv
        if fd < 0:
            raise OSError(ctypes.get_errno(), "accept")
        with socket.socket(fileno=fd) as conn:
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            # the Host header names a port nobody listens on, as a proxy's upstream name does
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
""")


@pytest.fixture(scope="module", params=["socket", "syscalls"])
def agent(request: pytest.FixtureRequest, receiver: OtlpGrpcReceiver,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent, str]]:
    a = Agent(tmp_path_factory.mktemp(f"agent-{request.param}"), receiver.endpoint,
              extra={"probes": {"enabled": ["http"], "data_hooks": request.param}})
    try:
        a.start()
        yield a, request.param
    finally:
        assert a.stop() == 0


def test_server_spans_of_an_accept_without_address(agent: tuple[Agent, str], receiver: OtlpGrpcReceiver) -> None:
    _, hooks = agent
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)  # bound while traced
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        client_ports = []
        for n in range(3):
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{local_port}",
                                  "-H", "Host: upstream:8080", f"http://127.0.0.1:{PORT}/na-{hooks}-{n}"],
                                 capture_output=True, timeout=30)
            code, port = out.stdout.split()
            assert code == b"200"
            client_ports.append(int(port))
        paths = {f"/na-{hooks}-{n}" for n in range(3)}

        def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.attributes.get("url.path") in paths]

        receiver.recorder.wait_for_spans(lambda spans: len(mine(spans)) >= 6, timeout=20)
        time.sleep(0.5)  # a span too many must show up as a failure
        spans = mine(receiver.recorder.spans)
    finally:
        server.kill()
        server.wait()
    assert len(spans) == 6, spans
    for n in range(3):
        path = f"/na-{hooks}-{n}"
        client = next(s for s in spans if s.kind == "CLIENT" and s.attributes["url.path"] == path)
        served = next(s for s in spans if s.kind == "SERVER" and s.attributes["url.path"] == path)
        assert served.attributes["server.port"] == 8080  # the Host header, as the semconv says
        peer = (served.attributes.get("network.peer.address"), served.attributes.get("network.peer.port"),
                served.attributes.get("client.address"))
        if hooks == "socket":
            assert peer == ("127.0.0.1", client_ports[n], "127.0.0.1"), (n, served.attributes)
            # one trace: curl's span is the parent
            assert (served.trace_id, served.parent_span_id) == (client.trace_id, client.span_id), (n, served)
        else:  # no peer known: never a made-up one, and not linked (no local client to match it with)
            assert peer == (None, None, None), (n, served.attributes)
            assert served.parent_span_id == "" and served.trace_id != client.trace_id, (n, served)
