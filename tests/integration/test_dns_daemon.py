"""DNS through the real daemon: glibc's resolver, Python sockets and dnsmasq on loopback.

glibc reads its name server from /etc/resolv.conf, which a test must not change on the host. So
the resolving clients (``getent hosts``, Python's ``socket.getaddrinfo``) run in a private mount
namespace (``unshare -m``) where a temporary resolv.conf (``nameserver 127.0.0.77``) and
nsswitch.conf (``hosts: files dns``: no systemd/mymachines modules, whose answers would not come
from the wire) are bind-mounted over the real ones. dnsmasq listens on 127.0.0.77 port 53 (a
resolver in resolv.conf has no port), a loopback address nothing else here uses.

What glibc does (strace here): each lookup opens a UDP socket and connect()s it to the server;
getaddrinfo(AF_UNSPEC) sends A and AAAA in one sendmmsg (two datagrams) and reads the answers
with recvfrom; gethostbyname2 (what ``getent hosts`` calls: AF_INET6 first, then AF_INET) sends
one query per socket with sendto. Records (tests/support/dns_server.py's set):
svc.test A 127.0.0.5 (AAAA: NXDOMAIN), dual.test A 127.0.0.6 + AAAA ::6, v4only.test A 127.0.0.7,
any other name under .test NXDOMAIN. Port 53 on 127.0.0.77; nothing else in 19000-19099 needed.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import Agent
from tests.support.dns_server import DNSMASQ, build_query
from tests.support.otlp_receiver import OtlpGrpcReceiver, ReceivedSpan

pytestmark = [pytest.mark.root, pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")]

RESOLVER = "127.0.0.77"
ERROR = 2  # OTLP status code ERROR


@pytest.fixture(scope="module")
def agent(receiver: OtlpGrpcReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent"), receiver.endpoint,
              extra={"probes": {"enabled": ["dns"]}, "exporter": {"batch_size": 64}}).start()
    yield a
    assert a.stop() == 0


@pytest.fixture(scope="module")
def dnsmasq(agent: Agent) -> Iterator[subprocess.Popen[bytes]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((RESOLVER, 53))
        except OSError as e:
            pytest.skip(f"{RESOLVER}:53 is taken: {e}")
    proc = subprocess.Popen(
        [
            DNSMASQ, "-k", "--no-resolv", "--no-hosts", "--no-poll", "--conf-file=/dev/null",
            f"--listen-address={RESOLVER}", "--bind-interfaces", "--port=53", "--user=root",
            "--pid-file=", "--local=/test/", "--address=/svc.test/127.0.0.5",
            "--host-record=dual.test,127.0.0.6,::6", "--host-record=v4only.test,127.0.0.7",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:  # readiness over TCP: a UDP probe would make spans of this process
        try:
            socket.create_connection((RESOLVER, 53), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("dnsmasq did not start") from None
            time.sleep(0.05)
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def etc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("etc")
    (d / "resolv.conf").write_text(f"nameserver {RESOLVER}\noptions attempts:1 timeout:2\n")
    (d / "nsswitch.conf").write_text("hosts: files dns\n")
    return d


@pytest.fixture(autouse=True)
def _clean(receiver: OtlpGrpcReceiver) -> None:
    receiver.recorder.clear()


def in_private_resolver(etc: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """Runs ``argv`` with ``etc``'s resolv.conf and nsswitch.conf seen as /etc's, in a mount
    namespace of its own. ``exec`` keeps the pid: the spans' process.pid is the returned pid."""
    script = (
        f"mount --bind {etc}/resolv.conf /etc/resolv.conf && "
        f"mount --bind {etc}/nsswitch.conf /etc/nsswitch.conf && exec \"$@\""
    )
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    result.pid = proc.pid  # type: ignore[attr-defined]
    return result


def is_ours(s: ReceivedSpan) -> bool:
    a = s.attributes
    return RESOLVER in (a.get("server.address"), a.get("network.peer.address")) and "dns.question.name" in a


def wait_dns(receiver: OtlpGrpcReceiver, count: int, timeout: float = 15.0) -> list[ReceivedSpan]:
    try:
        receiver.recorder.wait_for_spans(lambda spans: sum(1 for s in spans if is_ours(s)) >= count, timeout)
    except TimeoutError:
        pass  # the count assertion says what arrived
    time.sleep(1.0)  # one too many must fail the test, not slip by
    return sorted((s for s in receiver.recorder.spans if is_ours(s)), key=lambda s: s.start_unix_ns)


def row(s: ReceivedSpan) -> tuple[object, ...]:
    """(name, question, type, rcode, answer count, answers, OTLP status, error.type)"""
    a = s.attributes
    return (s.name, a["dns.question.name"], a["hostagent.dns.question.type"], a.get("hostagent.dns.response_code"),
            a.get("hostagent.dns.answer_count"), a.get("dns.answers"), s.status_code, a.get("error.type"))


def assert_client_spans(spans: list[ReceivedSpan], pid: int) -> None:
    for s in spans:
        assert s.kind == "CLIENT"
        assert s.resource["process.pid"] == pid
        assert s.attributes["server.address"] == RESOLVER
        assert s.attributes["server.port"] == 53
        assert s.attributes["network.peer.address"] == RESOLVER
        assert s.attributes["network.peer.port"] == 53
        assert s.scope_name == "hostagent"
        assert s.attributes["network.transport"] in ("udp", "tcp")
        assert 0 < s.end_unix_ns - s.start_unix_ns < 1_000_000_000


def test_the_host_resolv_conf_is_not_touched(etc: Path, dnsmasq: subprocess.Popen[bytes]) -> None:
    before = Path("/etc/resolv.conf").read_bytes()
    out = in_private_resolver(etc, "cat", "/etc/resolv.conf")
    assert out.stdout == f"nameserver {RESOLVER}\noptions attempts:1 timeout:2\n".encode()
    assert Path("/etc/resolv.conf").read_bytes() == before


def test_getent_hosts_queries_aaaa_then_a(receiver: OtlpGrpcReceiver, etc: Path,
                                          dnsmasq: subprocess.Popen[bytes]) -> None:
    out = in_private_resolver(etc, "getent", "hosts", "svc.test")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [b"127.0.0.5", b"svc.test"]
    spans = wait_dns(receiver, 2)
    # gethostbyname2(AF_INET6) first: dnsmasq's --address answers AAAA with NXDOMAIN, an error;
    # then gethostbyname2(AF_INET)
    assert [row(s) for s in spans] == [
        ("DNS AAAA", "svc.test", "AAAA", "NXDOMAIN", 0, None, ERROR, "NXDOMAIN"),
        ("DNS A", "svc.test", "A", "NOERROR", 1, ("127.0.0.5",), 0, None),
    ]
    assert_client_spans(spans, out.pid)  # type: ignore[attr-defined]
    assert all(s.resource["process.executable.name"] == "getent" for s in spans)
    assert spans[0].status_message == "NXDOMAIN"


def test_getaddrinfo_sends_a_and_aaaa_in_one_sendmmsg(receiver: OtlpGrpcReceiver, etc: Path,
                                                      dnsmasq: subprocess.Popen[bytes]) -> None:
    code = (
        "import socket\n"
        "print(sorted({a[4][0] for a in socket.getaddrinfo('dual.test', 80, type=socket.SOCK_STREAM)}))\n"
        "try:\n"
        "    socket.getaddrinfo('nope.test', 80, type=socket.SOCK_STREAM)\n"
        "except socket.gaierror as e:\n"
        "    print(e.errno == socket.EAI_NONAME)\n"
    )
    out = in_private_resolver(etc, sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout == b"['127.0.0.6', '::6']\nTrue\n"
    spans = wait_dns(receiver, 4)
    got = sorted(row(s) for s in spans)  # A and AAAA leave in one syscall: same timestamp order
    assert got == [
        ("DNS A", "dual.test", "A", "NOERROR", 1, ("127.0.0.6",), 0, None),
        ("DNS A", "nope.test", "A", "NXDOMAIN", 0, None, ERROR, "NXDOMAIN"),
        ("DNS AAAA", "dual.test", "AAAA", "NOERROR", 1, ("::6",), 0, None),
        ("DNS AAAA", "nope.test", "AAAA", "NXDOMAIN", 0, None, ERROR, "NXDOMAIN"),
    ]
    assert_client_spans(spans, out.pid)  # type: ignore[attr-defined]
    # dual.test's pair precedes nope.test's pair
    assert {s.attributes["dns.question.name"] for s in spans[:2]} == {"dual.test"}


def test_plain_udp_sendto_recvfrom(receiver: OtlpGrpcReceiver, dnsmasq: subprocess.Popen[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for qid, name, qtype in ((0x0A01, "svc.test", 1), (0x0A02, "v4only.test", 28), (0x0A03, "gone.test", 1)):
            s.sendto(build_query(qid, name, qtype), (RESOLVER, 53))
            data, peer = s.recvfrom(4096)
            assert peer == (RESOLVER, 53) and data[:2] == struct.pack("!H", qid)
        port = s.getsockname()[1]
    want = [
        ("DNS A", "svc.test", "A", "NOERROR", 1, ("127.0.0.5",), 0, None),
        # NOERROR with no answer (the name exists, without AAAA): not an error
        ("DNS AAAA", "v4only.test", "AAAA", "NOERROR", 0, None, 0, None),
        ("DNS A", "gone.test", "A", "NXDOMAIN", 0, None, ERROR, "NXDOMAIN"),
    ]
    spans = wait_dns(receiver, 3)
    assert [row(s) for s in spans] == want
    assert_client_spans(spans, os.getpid())
    # dnsmasq's side of the same datagrams (recvmsg/sendmsg on its unconnected socket)
    served = sorted((x for x in receiver.recorder.spans
                     if x.resource.get("process.pid") == dnsmasq.pid and x.attributes.get("network.peer.port") == port),
                    key=lambda x: x.start_unix_ns)
    assert [row(s) for s in served] == want
    for span in served:
        assert span.kind == "SERVER"
        assert span.resource["process.executable.name"] == "dnsmasq"
        assert span.attributes["client.address"] == "127.0.0.1"  # the source address the kernel chose
        assert span.attributes["network.transport"] == "udp"


def test_connected_udp_socket_with_write_and_read(receiver: OtlpGrpcReceiver,
                                                   dnsmasq: subprocess.Popen[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect((RESOLVER, 53))
        for qid, name, qtype in ((0x0C01, "dual.test", 28), (0x0C02, "SvC.TeSt", 1)):
            # write(2)/read(2): the syscalls name no peer; it comes from connect()
            os.write(s.fileno(), build_query(qid, name, qtype))
            # settimeout made the fd non-blocking: wait for the answer before read(2)
            assert select.select([s], [], [], 5)[0], "no answer from dnsmasq"
            data = os.read(s.fileno(), 4096)
            assert data[:2] == struct.pack("!H", qid)
    spans = wait_dns(receiver, 2)
    assert [row(s) for s in spans] == [
        ("DNS AAAA", "dual.test", "AAAA", "NOERROR", 1, ("::6",), 0, None),
        ("DNS A", "SvC.TeSt", "A", "NOERROR", 1, ("127.0.0.5",), 0, None),  # the name as asked
    ]
    assert_client_spans(spans, os.getpid())


def test_tcp_queries_on_one_connection(receiver: OtlpGrpcReceiver, dnsmasq: subprocess.Popen[bytes]) -> None:
    with socket.create_connection((RESOLVER, 53), timeout=5) as s:
        for qid, name, qtype in ((0x0D01, "svc.test", 1), (0x0D02, "nope.test", 28)):
            q = build_query(qid, name, qtype)
            s.sendall(struct.pack("!H", len(q)) + q)
            length = struct.unpack("!H", s.recv(2, socket.MSG_WAITALL))[0]
            assert s.recv(length, socket.MSG_WAITALL)[:2] == struct.pack("!H", qid)
    spans = wait_dns(receiver, 2)
    assert [row(s) for s in spans] == [
        ("DNS A", "svc.test", "A", "NOERROR", 1, ("127.0.0.5",), 0, None),
        ("DNS AAAA", "nope.test", "AAAA", "NXDOMAIN", 0, None, ERROR, "NXDOMAIN"),
    ]
    assert_client_spans(spans, os.getpid())
    assert all(s.attributes.get("network.transport") == "tcp" for s in spans)
