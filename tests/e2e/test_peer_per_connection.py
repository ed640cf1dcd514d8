"""Launchers that accept and hand each connection to a new process, under a REAL systemd 252 (PID 1
in nspawn, the host's network): the agent from this checkout on the host, curl on loopback,
asserted on exported spans.

- systemd ``Accept=yes``: hello.socket listens; for each connection systemd accepts (in an
  "(sd-accept)" child) and starts hello@<n>-<local>-<remote>.service with the connection on
  stdin/stdout. Every call's peer was "systemd" (the launcher holds the listener, and the server
  never accepts); it is "hello", the template's name, as for any instance of it.
- inetd ``nowait`` (Debian's openbsd-inetd, from the configured mirror): inetd accepts, forks and
  runs the server in its own unit. The peer and the server's own spans said "inetd"; they name the
  program inetd runs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import PKG_DIR
from tests.e2e.nspawn import Container, wait_for
from tests.support.agent import Agent
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan
from tests.support.ports import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # a first run also debootstraps the machine

# The server: one HTTP request on stdin, its answer on stdout (as inetd and Accept=yes run it).
# It lingers a second, so that the agent reads its /proc (its command line names it "hello.py"); a
# process gone before that is named from its exec event alone: "python3".
HELLO = """\
import sys, time
while sys.stdin.buffer.readline() not in (b"\\r\\n", b"\\n", b""):
    pass
sys.stdout.buffer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\nConnection: close\\r\\n\\r\\nhello\\n")
sys.stdout.buffer.flush()
time.sleep(1)
"""
CALLS = 3
INETD_DEBS = ("openbsd-inetd", "libevent-2.1-7", "libwrap0")  # what the minimal machine lacks of it


@pytest.fixture(scope="module")
def agent(machine: Container, receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """On the host, which sees the machine's processes and shares its network."""
    machine.write("/opt/hello/hello.py", HELLO)
    a = Agent(tmp_path_factory.mktemp("agent"), receiver.endpoint,
              extra={"exporter": {"batch_size": 4}, "agent": {"cpu_policy": "normal"}}).start()
    yield a
    assert a.stop() == 0


def calls(receiver: OtlpGrpcReceiver, port: int) -> list[ReceivedSpan]:
    """The spans of the calls to ``port`` (client and server), once each call has its client span,
    and one more second, so that a span too many fails the test instead of being missed."""
    def mine(s: ReceivedSpan) -> bool:
        return s.attributes.get("server.port") == port or s.attributes.get("url.query", "").startswith(f"{port}-")

    def complete(spans: list[ReceivedSpan]) -> bool:
        return sum(1 for s in spans if mine(s) and s.kind == "CLIENT") >= CALLS

    receiver.recorder.wait_for_spans(complete, 30.0)
    time.sleep(1.0)
    return [s for s in receiver.recorder.spans if mine(s)]


def curl_each(port: int, host: str = "127.0.0.1") -> None:
    for n in range(CALLS):
        done = subprocess.run(["curl", "-sg", "--max-time", "10", f"http://{host}:{port}/?{port}-{n}"],
                              capture_output=True, timeout=30)  # fmt: skip
        assert done.stdout == b"hello\n", done


def summary(spans: list[ReceivedSpan]) -> list[tuple[str, object, object, object]]:
    """(kind, the process's service, the peer's, the query) of each span, in call order."""
    rows = [(s.kind, s.resource.get("service.name"), s.attributes.get("service.peer.name"),
             s.attributes.get("url.query")) for s in spans]  # fmt: skip
    return sorted(rows, key=lambda r: (str(r[3]), r[0]))


@pytest.mark.parametrize(
    ("listen", "host"),
    [
        ("127.0.0.1:{port}", "127.0.0.1"),
        ("[::1]:{port}", "[::1]"),  # the unit is hello@0-::1:PORT-::1:CLIENT.service
        ("{port}", "127.0.0.1"),  # dual-stack [::]: the unit names the IPv4 end the client reached
    ],
)
def test_accept_yes_connections_name_the_template_not_systemd(machine: Container, agent: Agent,
                                                              receiver: OtlpGrpcReceiver, listen: str,
                                                              host: str) -> None:  # fmt: skip
    port = free_port()
    machine.write("/etc/systemd/system/hello.socket",
                  f"[Socket]\nListenStream={listen.format(port=port)}\nAccept=yes\n")
    machine.write("/etc/systemd/system/hello@.service",
                  "[Service]\nExecStart=/usr/bin/python3 /opt/hello/hello.py\n"
                  "StandardInput=socket\nStandardOutput=socket\n")  # fmt: skip
    machine.run(["systemctl", "daemon-reload"])
    machine.run(["systemctl", "restart", "hello.socket"])
    curl_each(port, host)
    # systemd passes the connection to PID 1 over a unix socket (SCM_RIGHTS) and the service gets it
    # as fds 0 and 1: adopted at its first read (bpf/capture.c: adopt), both fds one stream
    expected = []
    for n in range(CALLS):
        expected += [("CLIENT", "curl", "hello", f"{port}-{n}"), ("SERVER", "hello", None, f"{port}-{n}")]
    spans = calls(receiver, port)
    assert summary(spans) == expected
    # the client's end as the kernel has it, a true IPv6 one too (its offset from the kernel's BTF)
    assert {(s.attributes.get("client.address"), s.attributes.get("network.peer.address"))
            for s in spans if s.kind == "SERVER"} == {(host.strip("[]"), host.strip("[]"))}


def inetd_packages(dest: Path) -> list[Path]:
    """openbsd-inetd and the libraries the machine lacks, from the host's configured mirror."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.deb"):  # an older download: one version of each, or dpkg refuses
        old.unlink()
    done = subprocess.run(["apt-get", "download", *INETD_DEBS], cwd=dest, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    debs = sorted(dest.glob("*.deb"))
    if done.returncode != 0 or len(debs) < len(INETD_DEBS):
        pytest.skip(f"openbsd-inetd not downloadable from the configured mirror: {done.stderr[-500:]}")
    return debs


def test_inetd_nowait_connections_name_the_program_inetd_runs(machine: Container, agent: Agent,
                                                              receiver: OtlpGrpcReceiver) -> None:  # fmt: skip
    port = free_port()
    debs = inetd_packages(PKG_DIR / "inetd")
    machine.run(["dpkg", "-i", "--force-depends", *(f"/pkgs/inetd/{d.name}" for d in debs)])
    machine.write("/etc/inetd.conf",
                  f"127.0.0.1:{port} stream tcp nowait root /usr/bin/python3 python3 /opt/hello/hello.py\n")
    machine.run(["systemctl", "restart", "inetd.service"])
    wait_for(lambda: f":{port:04X} 00000000:0000 0A" in Path("/proc/net/tcp").read_text(), 10.0,
             f"inetd to listen on {port}")  # fmt: skip
    curl_each(port)
    expected = []
    for n in range(CALLS):
        expected += [("CLIENT", "curl", "hello.py", f"{port}-{n}"), ("SERVER", "hello.py", None, f"{port}-{n}")]
    assert summary(calls(receiver, port)) == expected


# Socket activation proper (Accept=no): the service inherits the listener as fd 3 and accepts on it.
ACTIVATED_WEB = """\
import http.server, socket

class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"hello\\n")

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Hello, bind_and_activate=False)
server.socket = socket.socket(fileno=3)
server.serve_forever()
"""


def test_an_activated_service_is_the_peer_of_its_first_call(machine: Container, agent: Agent,
                                                            receiver: OtlpGrpcReceiver) -> None:  # fmt: skip
    """systemd 252 listens in a short-lived "(sd-listen)" child: the LISTEN event names a process
    gone when it is read, so the table learnt nothing until a refresh, after the first call."""
    port = free_port()
    machine.write("/opt/web/web.py", ACTIVATED_WEB)
    machine.write("/etc/systemd/system/web.socket", f"[Socket]\nListenStream=127.0.0.1:{port}\n")
    machine.write("/etc/systemd/system/web.service", "[Service]\nExecStart=/usr/bin/python3 /opt/web/web.py\n")
    machine.run(["systemctl", "daemon-reload"])
    machine.run(["systemctl", "start", "web.socket"])
    curl_each(port)
    expected = []
    for n in range(CALLS):
        expected += [("CLIENT", "curl", "web", f"{port}-{n}"), ("SERVER", "web", None, f"{port}-{n}")]
    assert summary(calls(receiver, port)) == expected
