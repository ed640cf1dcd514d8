"""The real capture program against real clients and servers on loopback (root, real BPF).

One BpfCapture is compiled for the module; each test starts its own processes after it is
attached and looks only at events of those pids, so tests do not see each other's traffic.
Each test's servers listen on a port from tests.support.ports.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostagent.kernel import HeadersChoice, ensure_tracefs, find_kernel_headers
from hostagent.model import CaptureEvent, Direction, EventKind
from hostagent.probes import events as ev
from hostagent.probes import registry
from hostagent.probes.loader import BpfCapture
from tests.support.cgroups import hierarchies, remove_cgroup_dir
from tests.support.ports import free_port
from tests.support.servers import wait_port

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PAYLOAD = 1024
D, C, A, X = EventKind.DATA, EventKind.CONNECT, EventKind.ACCEPT, EventKind.CLOSE


class Collector:
    def __init__(self) -> None:
        self.events: list[CaptureEvent] = []

    def __call__(self, e: CaptureEvent) -> None:
        self.events.append(e)

    def of(self, pid: int) -> list[CaptureEvent]:
        return [e for e in self.events if e.pid == pid]


# On tmpfs, like the daemon's /run/hostagent: the merged header tree is ~16k symlinks, 0.3 s to
# build there and 10 s on this machine's disk under load. Reused across runs (it is stamped).
RUNTIME_DIR = Path("/dev/shm/hostagent-test-bpf")


@pytest.fixture(scope="module")
def headers() -> HeadersChoice:
    ensure_tracefs()
    return find_kernel_headers(None, RUNTIME_DIR)


# Every test on the capture fixture runs twice: bytes from the socket layer's tracepoints (what
# "auto" picks on this kernel) and from the syscall tracepoints (older kernels, other arches).
@pytest.fixture(scope="module", params=["socket", "syscalls"])
def capture(headers: HeadersChoice, request: pytest.FixtureRequest) -> Iterator[tuple[BpfCapture, Collector]]:
    col = Collector()
    cap = BpfCapture(on_event=col, payload_bytes=PAYLOAD, headers=headers, runtime_dir=RUNTIME_DIR,
                     data_hooks=request.param)
    cap.load()
    states = cap.attach({"socket", "process"})
    assert {g: s.state for g, s in states.items()} == {"socket": "attached", "process": "attached"}
    assert cap.data_path == request.param
    yield cap, col
    cap.close()


def drain_until(cap: BpfCapture, done: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cap.poll(10)
        if done():
            return
    cap.poll(10)


def data(evs: list[CaptureEvent], fd: int, direction: Direction) -> bytes:
    return b"".join(e.data for e in evs if e.kind == D and e.fd == fd and e.direction == direction)


def kinds(evs: list[CaptureEvent], fd: int) -> list[EventKind]:
    """Kinds for one fd with runs of DATA in the same direction collapsed."""
    out: list[tuple[EventKind, Direction]] = []
    for e in evs:
        if e.fd != fd or e.kind not in (D, C, A, X):
            continue
        key = (e.kind, e.direction if e.kind == D else Direction.EGRESS)
        if not out or out[-1] != key or e.kind != D:
            out.append(key)
    return [k for k, _ in out]


def connections(evs: list[CaptureEvent]) -> list[list[CaptureEvent]]:
    """Split events into per-connection lists (CONNECT/ACCEPT ... CLOSE), fd numbers get reused."""
    open_: dict[int, list[CaptureEvent]] = {}
    done: list[list[CaptureEvent]] = []
    for e in evs:
        if e.kind in (C, A):
            open_[e.fd] = [e]
        elif e.kind in (D, X) and e.fd in open_:
            open_[e.fd].append(e)
            if e.kind == X:
                done.append(open_.pop(e.fd))
    return done + list(open_.values())


def start_http_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)  # from this (excluded) process: adds no events
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def test_curl_against_http_server(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    srv = start_http_server(port)
    try:
        curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/path?x=1"])
        assert curl.wait(10) == 0
        drain_until(
            cap, lambda: any(e.kind == X for e in col.of(curl.pid)) and any(e.kind == X for e in col.of(srv.pid))
        )
    finally:
        stop(srv)
    cl = [e for e in col.of(curl.pid) if e.kind != EventKind.EXEC and e.kind != EventKind.EXIT]
    connect = [e for e in cl if e.kind == C]
    assert len(connect) == 1
    fd = connect[0].fd
    assert (connect[0].peer_addr, connect[0].peer_port) == ("127.0.0.1", port)
    assert connect[0].family == socket.AF_INET and connect[0].sock_type == socket.SOCK_STREAM
    assert kinds(cl, fd) == [C, D, D, X]
    request = data(cl, fd, Direction.EGRESS)
    assert request.startswith(b"GET /path?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)
    assert request.endswith(b"\r\n\r\n")
    egress = [e for e in cl if e.kind == D and e.direction == Direction.EGRESS]
    assert [e.size for e in egress] == [len(request)]  # all of it fits the payload
    assert all(e.tid == curl.pid for e in cl)
    # the thread's comm and cgroup id: on connect only (the tracker names a connection from its
    # first event, here the CONNECT record in the ring; the data events and the close leave both out)
    assert [(e.comm, bool(e.cgroup_id)) for e in cl if e.kind != D] == [("curl", True), ("", False)]
    assert all(e.comm == "" and e.cgroup_id == 0 for e in cl if e.kind == D)

    # the server also accepted wait_port's probe connection (no data): keep the one with data
    conns = connections(col.of(srv.pid))
    assert len(conns) == 2 and [e.kind for e in conns[0]] == [A, X]
    sv = conns[1]
    accept = [sv[0]]
    sfd = accept[0].fd
    assert accept[0].peer_addr == "127.0.0.1" and accept[0].peer_port != port
    assert kinds(sv, sfd) == [A, D, D, X]
    # named by the ACCEPT record likewise: no data event carries comm or cgroup id
    assert sv[0].comm.startswith("python") and sv[0].cgroup_id
    assert all(e.comm == "" and e.cgroup_id == 0 for e in sv if e.kind == D)
    assert data(sv, sfd, Direction.INGRESS) == request
    response = data(sv, sfd, Direction.EGRESS)
    assert response.startswith(b"HTTP/1.0 404 File not found\r\n")
    assert data(cl, fd, Direction.INGRESS) == response
    # DATA events carry the connection's peer from the socket map
    assert {(e.peer_addr, e.peer_port) for e in cl if e.kind == D} == {("127.0.0.1", port)}


def test_exec_and_exit_events(capture: tuple[BpfCapture, Collector]) -> None:
    cap, col = capture
    p = subprocess.Popen(["/bin/true"])
    p.wait(5)
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    got = [(e.kind, e.data, e.comm) for e in col.of(p.pid)]
    assert got == [(EventKind.EXEC, b"/bin/true", "true"), (EventKind.EXIT, b"", "true")]
    assert col.of(p.pid)[0].size == os.getpid()  # EXEC: who forked it


def test_cgroup_mkdir_and_exec_in_it_carry_the_same_id(capture: tuple[BpfCapture, Collector]) -> None:
    """What identity resolves a gone process's container or unit with: the CGROUP event (id,
    path) of a new unified-hierarchy cgroup, and the cgroup id of an EXEC in it -- equal to the
    directory's inode -- and the EXEC's parent, through sh -c 'exec ...' (two execs)."""
    cap, col = capture
    mounts = [mount for label, mount in hierarchies() if label == "unified"]
    if not mounts:
        pytest.skip("no unified cgroup hierarchy")
    unit = Path(mounts[0]) / "hostagent-bpf-test.scope"
    subprocess.run(["mkdir", str(unit)], check=True)  # by another process: the agent's own are left out
    try:
        cgroup_id = os.stat(unit).st_ino
        p = subprocess.Popen(["/bin/sh", "-c", f"echo $$ > {unit}/cgroup.procs && exec /bin/true"])
        assert p.wait(5) == 0
        drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    finally:
        remove_cgroup_dir(unit)
    made = [e for e in col.events if e.kind == EventKind.CGROUP and e.size == cgroup_id]
    assert [e.data for e in made] == [b"/hostagent-bpf-test.scope"]
    execs = [e for e in col.of(p.pid) if e.kind == EventKind.EXEC]
    assert [(e.data, e.size) for e in execs] == [(b"/bin/sh", os.getpid()), (b"/bin/true", os.getpid())]
    assert execs[1].cgroup_id == cgroup_id != execs[0].cgroup_id


CHILD = textwrap.dedent(
    """
    import ctypes, os, socket, sys, time
    port = int(sys.argv[2])
    def pair():
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port)); ls.listen(4)
        c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
        keep.append(ls)
        return c, s
    keep = []
    def recv_exactly(s, n):
        got = b""
        while len(got) < n:
            got += s.recv(n - len(got))
        return got
    mode = sys.argv[1]
    if mode == "big":
        c, s = pair()
        c.sendall(bytes(range(256)) * 20)            # 5120 bytes, one sendto
        recv_exactly(s, 5120)
    elif mode == "tails":                            # calls bigger than the head copy, each syscall
        c, s = pair()
        pat = lambda n, k: bytes((i * 7 + k) % 251 for i in range(n))
        os.write(c.fileno(), pat(5000, 1)); recv_exactly(s, 5000)
        c.send(pat(3000, 2)); recv_exactly(s, 3000)                    # sendto
        c.sendmsg([pat(1000, 3), pat(3000, 4), pat(300, 5), pat(200, 6)]); recv_exactly(s, 4500)
        os.writev(c.fileno(), [pat(600, 7), pat(700, 8)]); recv_exactly(s, 1300)  # no gap
        c.sendmsg([pat(4000, 9), b"", pat(100, 10)]); recv_exactly(s, 4100)       # tail over 2
    elif mode == "sendmsg":
        c, s = pair()
        c.sendmsg([b"a" * 10, b"b" * 10, b"c" * 5])  # one sendmsg, three iovecs
        recv_exactly(s, 25)
    elif mode == "manyiov":                           # the iovec walk's bounds: 128 iovecs
        c, s = pair()
        c.sendmsg([bytes([65 + i % 26]) * 3 for i in range(130)])  # 390 B in 130 iovecs
        recv_exactly(s, 390)
        os.writev(c.fileno(), [bytes([97 + i % 26]) * 50 for i in range(40)])  # 2000 B
        recv_exactly(s, 2000)
    elif mode == "vec":
        c, s = pair()
        os.writev(c.fileno(), [b"hello ", b"world"])
        time.sleep(0.05)
        b1, b2 = bytearray(4), bytearray(20)
        os.readv(s.fileno(), [b1, b2])
    elif mode == "sendmmsg":
        class iovec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
        class msghdr(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                        ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                        ("flags", ctypes.c_int)]
        class mmsghdr(ctypes.Structure):
            _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", port))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sa = (b"\\x02\\x00" + port.to_bytes(2, "big") + bytes([127, 0, 0, 1])).ljust(16, b"\\0")
        sab = ctypes.create_string_buffer(sa, 16)
        bufs = [ctypes.create_string_buffer(b"first-datagram", 14),
                ctypes.create_string_buffer(b"second", 6)]
        iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), len(b)) for b in bufs]
        msgs = (mmsghdr * 2)()
        for i in range(2):
            msgs[i].hdr.name = ctypes.cast(sab, ctypes.c_void_p); msgs[i].hdr.namelen = 16
            msgs[i].hdr.iov = ctypes.pointer(iovs[i]); msgs[i].hdr.iovlen = 1
        libc = ctypes.CDLL(None, use_errno=True)
        n = libc.sendmmsg(tx.fileno(), msgs, 2, 0)
        assert n == 2, ctypes.get_errno()
        rx.recvfrom(100); rx.recvfrom(100)
        print(tx.fileno(), rx.fileno(), tx.getsockname()[1], flush=True)
    elif mode == "nonblock":
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port)); ls.listen(4)
        c = socket.socket(); c.setblocking(False)
        rc = c.connect_ex(("127.0.0.1", port))
        import errno; assert rc == errno.EINPROGRESS, rc
        time.sleep(0.05); c.setblocking(True)
        c.sendall(b"after-einprogress")
        s, _ = ls.accept(); recv_exactly(s, 17)
    elif mode == "httpclient":
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/from-http-client?y=2")
        body = conn.getresponse().read()
        conn.close()
    elif mode == "v6":
        ls = socket.socket(socket.AF_INET6); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("::1", port)); ls.listen(4)
        c = socket.create_connection(("::1", port)); s, _ = ls.accept()
        c.sendall(b"over-ipv6"); recv_exactly(s, 9)
    elif mode == "v4mapped":                          # a dual-stack listener, an IPv4 client
        ls = socket.socket(socket.AF_INET6); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ls.bind(("::", port)); ls.listen(4)
        c = socket.create_connection(("127.0.0.1", port)); s, peer = ls.accept()
        assert peer[0] == "::ffff:127.0.0.1", peer   # what the AF_INET6 socket itself reports
        c.sendall(b"mapped"); recv_exactly(s, 6)
        s.sendall(b"back"); recv_exactly(c, 4)
    elif mode == "huge":
        c, s = pair()
        c.sendall(bytes(range(256)) * 64)             # 16384 bytes
        recv_exactly(s, 16384)
    elif mode == "mute":
        c1, s1 = pair()
        c2 = socket.create_connection(("127.0.0.1", port))
        print(c1.fileno(), c2.fileno(), flush=True)
        sys.stdin.readline()                          # the test mutes c1 now
        c1.sendall(b"muted-bytes"); c2.sendall(b"loud-bytes")
        recv_exactly(s1, 11)
    elif mode == "mute-late":                         # c1 captured after a first mute, then muted
        c1, s1 = pair()
        c2 = socket.create_connection(("127.0.0.1", port))
        print(c1.fileno(), c2.fileno(), flush=True)
        sys.stdin.readline()                          # the test mutes c2 now
        c1.sendall(b"before"); recv_exactly(s1, 6)
        print("sent", flush=True)
        sys.stdin.readline()                          # the test mutes c1 now
        c1.sendall(b"after"); recv_exactly(s1, 5)
        c2.sendall(b"quiet")
    elif mode == "opened":                            # two connections opened, their bytes later
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port)); ls.listen(4)
        c1 = socket.create_connection(("127.0.0.1", port)); s1, _ = ls.accept()
        c2 = socket.create_connection(("127.0.0.1", port)); s2, _ = ls.accept()
        print(c1.fileno(), s1.fileno(), c2.fileno(), s2.fileno(), flush=True)
        sys.stdin.readline()
        c1.sendall(b"one"); recv_exactly(s1, 3)
        print("sent", flush=True)
        sys.stdin.readline()
        c2.sendall(b"two"); recv_exactly(s2, 3)
    elif mode == "exit-held":                         # a captured socket left open at exit
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"first-life"); recv_exactly(c, 2)
        print(c.fileno(), flush=True)
        sys.stdin.readline()
        os._exit(0)                                   # no close(): the kernel closes it
    elif mode == "unix-first":                        # the lowest free fds for a Unix pair
        a, b = socket.socketpair()
        print(a.fileno(), flush=True)
        a.sendall(b"unix-bytes"); recv_exactly(b, 10)
    elif mode == "udp":                               # unconnected sockets: the peer is per datagram
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", port))
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.bind(("127.0.0.1", 0))
        print(tx.fileno(), rx.fileno(), tx.getsockname()[1], flush=True)
        sys.stdin.readline()
        tx.sendto(b"question", ("127.0.0.1", port))
        data, sender = rx.recvfrom(100)
        rx.sendto(b"answer", sender)
        tx.recvfrom(100)
        rx.sendmsg([b"second"], [], 0, sender)
        tx.recvmsg(100)
    elif mode == "peek":                              # a peek, then the read that takes the bytes
        c, s = pair()
        c.sendall(b"peeked-then-read")
        time.sleep(0.05)
        assert s.recv(6, socket.MSG_PEEK) == b"peeked"
        assert s.recvfrom(100, socket.MSG_PEEK)[0] == b"peeked-then-read"
        recv_exactly(s, 16)
    elif mode == "pingpong":                          # 200 round trips, small writes and reads
        c, s = pair()
        for i in range(200):
            c.sendall(b"ping%03d" % i); recv_exactly(s, 7)
            s.sendall(b"pong%03d" % i); recv_exactly(c, 7)
    elif mode == "per-request":                      # a connection per request, as gunicorn gets
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port)); ls.listen(4)
        for i in range(3):                            # the same two fd numbers every time
            c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
            c.sendall(b"request%d" % i); recv_exactly(s, 8)
            s.sendall(b"response%d" % i); recv_exactly(c, 9)
            print(c.fileno(), s.fileno(), c.getsockname()[1], flush=True)
            s.close(); c.close()
        sys.stdin.readline()                          # the test looks at the closed fds' slots
    elif mode == "hold-udp":                          # a connected UDP pair, as "hold"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", port))
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.connect(("127.0.0.1", port))
        s.connect(c.getsockname())
        print(c.fileno(), s.fileno(), c.getsockname()[1], flush=True)
        for line in sys.stdin:                        # each line: send it on c, read it on s
            c.send(line.encode()); assert s.recv(100) == line.encode()
            print("ok", flush=True)
    elif mode == "close-race":                        # s's fd closed while a thread is in s.recv
        import threading
        c, s = pair()
        print(c.fileno(), s.fileno(), flush=True)
        sys.stdin.readline()
        got = []
        t = threading.Thread(target=lambda: got.append(s.recv(100)))
        t.start()
        time.sleep(0.3)                               # blocked in recvfrom, holding the file
        os.close(s.fileno()); s.detach()
        c.sendall(b"raced\\n"); t.join()
        print("ok" if got == [b"raced\\n"] else got, flush=True)
        sys.stdin.readline()                          # the test looks at the closed fd's slot
    elif mode == "closes":                            # two sockets closed on cue, the listener kept
        c, s = pair()
        c.sendall(b"hello"); recv_exactly(s, 5)
        print(c.fileno(), s.fileno(), keep[0].fileno(), flush=True)
        sys.stdin.readline()
        c.close(); s.close()
        f = open("/dev/null")                         # the lowest free fd number: a closed socket's
        print("closed", flush=True)
        sys.stdin.readline()
    elif mode == "hold":
        c, s = pair()
        print(c.fileno(), s.fileno(), flush=True)
        for line in sys.stdin:                        # each line: send it on c, read it on s
            c.sendall(line.encode()); recv_exactly(s, len(line))
            print("ok", flush=True)
    print("done", flush=True)
    """
)


def run_child(mode: str, port: int, **kw: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )


def finish(cap: BpfCapture, col: Collector, p: subprocess.Popen[str]) -> list[CaptureEvent]:
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0 and out.endswith("done\n"), out
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    return col.of(p.pid)


def conn_fds(evs: list[CaptureEvent]) -> tuple[int, int]:
    """(client fd, server fd) of the one loopback pair a child made."""
    (c,) = [e.fd for e in evs if e.kind == C]
    (s,) = [e.fd for e in evs if e.kind == A]
    return c, s


def test_unconnected_udp_datagrams_carry_their_sender(capture: tuple[BpfCapture, Collector]) -> None:
    """recvfrom/recvmsg learn the sender only as the syscall returns (on the socket path the
    event is emitted there): every received datagram names who sent it."""
    port = free_port()
    cap, col = capture
    p = run_child("udp", port)
    assert p.stdout is not None and p.stdin is not None
    tx, rx, tx_port = (int(x) for x in p.stdout.readline().split())
    p.stdin.write("go\n")
    p.stdin.flush()
    evs = finish(cap, col, p)
    got = [(e.fd, e.direction, e.data, e.peer_port) for e in evs if e.kind == D]
    assert got == [
        (tx, Direction.EGRESS, b"question", port),
        (rx, Direction.INGRESS, b"question", tx_port),
        (rx, Direction.EGRESS, b"answer", tx_port),
        (tx, Direction.INGRESS, b"answer", port),
        (rx, Direction.EGRESS, b"second", tx_port),
        (tx, Direction.INGRESS, b"second", port),
    ]


def test_backed_off_the_shed_time_programs_go_and_a_datagram_receive_is_counted(
        capture: tuple[BpfCapture, Collector]) -> None:
    """An agent backed off from a hopeless overload detaches a send's start stamp and the datagram
    exits (on the socket path): meanwhile a datagram receive is counted as lost with the ring's
    overload, never emitted without its sender, and sends are still captured; back at full
    effort every datagram carries its sender again."""
    port = free_port()
    cap, col = capture

    def udp_round() -> list[tuple[int, Direction, bytes, int]]:
        p = run_child("udp", port)
        assert p.stdout is not None and p.stdin is not None
        p.stdout.readline()  # the child's fds and port
        p.stdin.write("go\n")
        p.stdin.flush()
        return [(e.fd, e.direction, e.data, e.peer_port) for e in finish(cap, col, p) if e.kind == D]

    lean = 4 if cap.data_path == registry.SOCKET_DATA else 0  # the syscall path has none of them
    drops = cap.drop_counts()["ringbuf_full"]
    assert cap.set_backed_off(True) == lean and cap.set_backed_off(True) == 0
    try:
        got = udp_round()
        if lean:
            assert [(d, data) for _, d, data, _ in got] == [
                (Direction.EGRESS, b"question"), (Direction.EGRESS, b"answer"), (Direction.EGRESS, b"second")]
            assert cap.drop_counts()["ringbuf_full"] >= drops + 3  # the three receives, counted
        else:
            assert len(got) == 6
    finally:
        assert cap.set_backed_off(False) == lean
    got = udp_round()
    assert [(d, data) for _, d, data, _ in got] == [
        (Direction.EGRESS, b"question"), (Direction.INGRESS, b"question"), (Direction.EGRESS, b"answer"),
        (Direction.INGRESS, b"answer"), (Direction.EGRESS, b"second"), (Direction.INGRESS, b"second")]
    assert all(peer for _, _, _, peer in got)


def test_backed_off_close_goes_unseen_and_the_sockets_closed_meanwhile_are_closed_at_full_effort(
        capture: tuple[BpfCapture, Collector]) -> None:
    """Backed off, the socket path detaches close() too (nginx closes the file it serves per
    request): a socket closed meanwhile keeps its entry and sends no CLOSE. Once close is attached
    again the sockets closed meanwhile are found in /proc: their entries are closed and each one's
    CLOSE is handed on (late, not lost); a socket still open (the listener) is left alone."""
    port = free_port()
    cap, col = capture
    p = run_child("closes", port)
    assert p.stdout is not None and p.stdin is not None
    c, s, ls = (int(x) for x in p.stdout.readline().split())
    drain_until(cap, lambda: any(e.kind == D for e in col.of(p.pid)))
    listener = cap.socket_info(p.pid, ls) is not None

    def closes() -> list[int]:
        return sorted(e.fd for e in col.of(p.pid) if e.kind == X)

    lean = 4 if cap.data_path == registry.SOCKET_DATA else 0  # the syscall path detaches none
    settled = cap.closes_settled
    assert cap.set_backed_off(True) == lean
    try:
        p.stdin.write("close\n")
        p.stdin.flush()
        assert p.stdout.readline() == "closed\n"
        drain_until(cap, lambda: len(closes()) >= 2, timeout=0.5 if lean else 5.0)
        if lean:
            assert closes() == []  # unseen
            assert cap.socket_info(p.pid, c) is not None and cap.socket_info(p.pid, s) is not None
        else:
            assert closes() == sorted([c, s])
    finally:
        assert cap.set_backed_off(False) == lean
    drain_until(cap, lambda: len(closes()) >= 2)
    assert closes() == sorted([c, s])  # once each: seen, or found at full effort
    assert cap.closes_settled == settled + (2 if lean else 0)
    assert cap.socket_info(p.pid, c) is None and cap.socket_info(p.pid, s) is None
    assert (cap.socket_info(p.pid, ls) is not None) == listener
    p.stdin.write("end\n")
    p.stdin.flush()
    finish(cap, col, p)


def test_peeked_bytes_are_reported_once_by_the_read_that_takes_them(
        capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("peek", port))
    _, s = conn_fds(evs)
    assert [(e.size, e.data) for e in evs if e.kind == D and e.fd == s] == [(16, b"peeked-then-read")]


def test_sent_bytes_are_stamped_before_the_peer_reads_them(capture: tuple[BpfCapture, Collector]) -> None:
    """Loopback: the reader may return before the writer's call does; bytes sent are stamped when
    the send began (sys_enter, or tcp_sendmsg_locked on the socket path), so every message is sent
    no later than it is received (a server span ends before its client's)."""
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("pingpong", port))
    c, s = conn_fds(evs)
    on_pair = [e for e in evs if e.kind == D and e.fd in (c, s)]
    sent = {e.data: e.ts_ns for e in on_pair if e.direction == Direction.EGRESS}
    got = {e.data: e.ts_ns for e in on_pair if e.direction == Direction.INGRESS}
    assert len(sent) == len(got) == 400
    late = [(m, sent[m] - got[m]) for m in sent if sent[m] > got[m]]
    assert late == []
    # and each send is stamped after the previous message arrived (not a stale stamp of an
    # earlier call): ping i+1 leaves after pong i was received
    for i in range(199):
        assert sent[b"ping%03d" % (i + 1)] >= got[b"pong%03d" % i]


def test_body_larger_than_payload_keeps_true_size(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("big", port))
    c, s = conn_fds(evs)
    sent = [e for e in evs if e.kind == D and e.fd == c]
    assert [(e.size, len(e.data)) for e in sent] == [(5120, PAYLOAD)]
    assert sent[0].data == (bytes(range(256)) * 20)[:PAYLOAD]
    received = [e for e in evs if e.kind == D and e.fd == s]
    assert sum(e.size for e in received) == 5120
    assert all(len(e.data) == min(e.size, PAYLOAD) for e in received)


def test_calls_bigger_than_the_head_carry_their_tail(capture: tuple[BpfCapture, Collector]) -> None:
    """write, sendto, sendmsg and writev (several iovecs, the tail over the last ones) and the
    reads on the other end: the head is the first PAYLOAD bytes, the tail the call's last
    TAIL_BYTES (512), never overlapping the head, with the true size kept; a call of at most
    PAYLOAD + 512 bytes comes whole."""
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("tails", port))
    c, s = conn_fds(evs)

    def pat(n: int, k: int) -> bytes:
        return bytes((i * 7 + k) % 251 for i in range(n))

    calls = [pat(5000, 1), pat(3000, 2), pat(1000, 3) + pat(3000, 4) + pat(300, 5) + pat(200, 6),
             pat(600, 7) + pat(700, 8), pat(4000, 9) + pat(100, 10)]  # fmt: skip
    sent = [e for e in evs if e.kind == D and e.fd == c]
    assert [(e.size, e.data, e.tail) for e in sent] == [
        (len(b), b[:PAYLOAD], b[-512:]) if len(b) > PAYLOAD + 512 else (len(b), b, b"") for b in calls
    ]
    assert [(len(e.data), len(e.tail)) for e in sent] == [(PAYLOAD, 512)] * 3 + [(1300, 0), (PAYLOAD, 512)]
    stream = b"".join(calls)
    pos = 0
    received = [e for e in evs if e.kind == D and e.fd == s]
    for e in received:  # however the reads fell, each carries its own head and tail
        whole = e.size <= PAYLOAD + 512
        assert e.data == stream[pos : pos + (e.size if whole else PAYLOAD)]
        assert e.tail == (b"" if whole else stream[pos + e.size - 512 : pos + e.size])
        pos += e.size
    assert pos == len(stream) and any(e.tail for e in received)


def test_sendmsg_iovecs_in_order(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("sendmsg", port))
    c, s = conn_fds(evs)
    sent = [e for e in evs if e.kind == D and e.fd == c]
    assert [(e.size, e.data) for e in sent] == [(25, b"a" * 10 + b"b" * 10 + b"c" * 5)]
    assert data(evs, s, Direction.INGRESS) == b"a" * 10 + b"b" * 10 + b"c" * 5


def test_writev_and_readv(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("vec", port))
    c, s = conn_fds(evs)
    assert [(e.direction, e.size, e.data) for e in evs if e.kind == D and e.fd == c] == [
        (Direction.EGRESS, 11, b"hello world")
    ]
    assert [(e.direction, e.size, e.data) for e in evs if e.kind == D and e.fd == s] == [
        (Direction.INGRESS, 11, b"hello world")
    ]


def test_many_iovecs_walk_128_and_clip_at_payload(capture: tuple[BpfCapture, Collector]) -> None:
    """copy_iov is a bounded loop: it must still walk exactly MAX_IOV (128) iovecs and stop
    mid-iovec at the payload limit, with the true size kept."""
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("manyiov", port))
    c, _ = conn_fds(evs)
    sent = [(e.size, e.data, e.tail) for e in evs if e.kind == D and e.fd == c]
    first = b"".join(bytes([65 + i % 26]) * 3 for i in range(128))  # iovecs 129, 130 unread
    second = b"".join(bytes([97 + i % 26]) * 50 for i in range(40))
    # the head stops in iovec 21 (20.48 iovecs), the tail starts in iovec 30 (29.76)
    assert sent == [(390, first, b""), (2000, second[:PAYLOAD], second[-512:])]
    assert len(first) == 384


def test_sendmmsg_gives_one_event_per_datagram_with_peer(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    p = run_child("sendmmsg", port)
    evs = finish(cap, col, p)
    sent = [e for e in evs if e.kind == D and e.direction == Direction.EGRESS]
    assert [(e.data, e.size, e.peer_addr, e.peer_port, e.sock_type) for e in sent] == [
        (b"first-datagram", 14, "127.0.0.1", port, socket.SOCK_DGRAM),
        (b"second", 6, "127.0.0.1", port, socket.SOCK_DGRAM),
    ]
    received = [e for e in evs if e.kind == D and e.direction == Direction.INGRESS]
    assert [e.data for e in received] == [b"first-datagram", b"second"]
    # recvfrom names the sender: the tx socket's port, not the receiver's
    assert len({e.peer_port for e in received}) == 1 and received[0].peer_port != port


NGINX_SENDFILE_CONF = """
daemon off;
master_process off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{ listen 127.0.0.1:{port}; root {root}/www; }}
}}
"""


def start_nginx_sendfile(root: Path, port: int, body: bytes) -> subprocess.Popen[bytes]:
    """nginx as one process with `sendfile on` (tests.support's nginx leaves it off)."""
    (root / "www").mkdir()
    (root / "tmp").mkdir()
    (root / "www" / "index.html").write_bytes(body)
    (root / "nginx.conf").write_text(NGINX_SENDFILE_CONF.format(root=root, port=port))
    proc = subprocess.Popen(["nginx", "-c", str(root / "nginx.conf"), "-p", str(root)])
    wait_port(port)
    return proc


def test_nginx_writev_and_sendfile(capture: tuple[BpfCapture, Collector], tmp_path: Path) -> None:
    port = free_port()
    cap, col = capture
    body = b"N" * 5000
    srv = start_nginx_sendfile(tmp_path, port, body)
    try:
        curl = subprocess.Popen(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{port}/index.html"])
        assert curl.wait(10) == 0
        drain_until(cap, lambda: any(e.kind == X for e in col.of(curl.pid)))
    finally:
        stop(srv)
    conns = connections(col.of(srv.pid))  # [wait_port's probe, curl's]
    assert len(conns) == 2 and [e.kind for e in conns[0]] == [A, X]
    sv = conns[1]
    sfd = sv[0].fd
    egress = [e for e in sv if e.kind == D and e.fd == sfd and e.direction == Direction.EGRESS]
    assert len(egress) == 2
    headers, file_body = egress
    assert headers.data.startswith(b"HTTP/1.1 200 OK\r\nServer: nginx") and headers.size == len(headers.data)
    assert (file_body.size, file_body.data) == (5000, b"")  # sendfile: size only
    (curl_fd,) = [e.fd for e in col.of(curl.pid) if e.kind == C]
    client_in = data(col.of(curl.pid), curl_fd, Direction.INGRESS)
    assert client_in.startswith(headers.data)
    moved = sum(e.size for e in col.of(curl.pid) if e.kind == D and e.direction == Direction.INGRESS)
    assert moved == headers.size + 5000


def test_nonblocking_connect_einprogress(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("nonblock", port))
    (conn,) = [e for e in evs if e.kind == C]
    assert (conn.peer_port, conn.size) == (port, 1)  # size 1: connect returned -EINPROGRESS
    assert [e.data for e in evs if e.kind == D and e.fd == conn.fd] == [b"after-einprogress"]


def test_python_http_client(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    srv = start_http_server(port)
    try:
        evs = finish(cap, col, run_child("httpclient", port))
    finally:
        stop(srv)
    (conn,) = [e for e in evs if e.kind == C]
    assert kinds(evs, conn.fd) == [C, D, D, X]
    request = data(evs, conn.fd, Direction.EGRESS)
    assert request == (
        b"GET /from-http-client?y=2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept-Encoding: identity\r\n\r\n" % port
    )
    response = data(evs, conn.fd, Direction.INGRESS)
    assert response.startswith(b"HTTP/1.0 404 File not found\r\n")
    drain_until(cap, lambda: any(e.kind == X for e in connections(col.of(srv.pid))[-1]))
    served = connections(col.of(srv.pid))[-1]
    assert data(served, served[0].fd, Direction.INGRESS) == request
    assert data(served, served[0].fd, Direction.EGRESS) == response


def test_events_do_not_wake_the_consumer_below_the_fill_threshold(
    capture: tuple[BpfCapture, Collector],
) -> None:
    """BPF_RB_NO_WAKEUP: poll() sleeps its whole timeout even though an event is waiting, then
    drains it. (With default flags the epoll wait would return at once.)"""
    cap, col = capture
    cap.poll(0)
    p = subprocess.Popen(["/bin/true"])
    p.wait(5)
    time.sleep(0.05)
    t0 = time.monotonic()
    n = cap.poll(300)
    waited = time.monotonic() - t0
    assert [e.kind for e in col.of(p.pid)] == [EventKind.EXEC, EventKind.EXIT]
    if n * (ev.HDR_SIZE + PAYLOAD) > cap.ring_bytes // 4:
        pytest.skip(f"other traffic on this host filled the ring past the wake threshold ({n} events)")
    assert waited >= 0.29


def test_ipv6_peer(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("v6", port))
    (conn,) = [e for e in evs if e.kind == C]
    (acc,) = [e for e in evs if e.kind == A]
    assert (conn.family, conn.peer_addr, conn.peer_port) == (socket.AF_INET6, "::1", port)
    assert (acc.family, acc.peer_addr) == (socket.AF_INET6, "::1")
    assert [(e.fd, e.data, e.peer_addr) for e in evs if e.kind == D] == [
        (conn.fd, b"over-ipv6", "::1"),
        (acc.fd, b"over-ipv6", "::1"),
    ]


def test_ipv4_mapped_peer_and_local_end_are_ipv4(capture: tuple[BpfCapture, Collector]) -> None:
    """An AF_INET6 listener accepting an IPv4 client sees ::ffff:127.0.0.1; events name it
    127.0.0.1 (OpenTelemetry's network.peer.address), the family stays the socket's."""
    port = free_port()
    cap, col = capture
    evs = finish(cap, col, run_child("v4mapped", port))
    (conn,) = [e for e in evs if e.kind == C]
    (acc,) = [e for e in evs if e.kind == A]
    assert (conn.family, conn.peer_addr, conn.peer_port) == (socket.AF_INET, "127.0.0.1", port)
    assert (acc.family, acc.peer_addr, acc.peer_port) == (socket.AF_INET6, "127.0.0.1", conn.local_port)
    served = [e for e in evs if e.kind == D and e.fd == acc.fd]
    assert [(e.direction, e.data) for e in served] == [(Direction.INGRESS, b"mapped"), (Direction.EGRESS, b"back")]
    assert {(e.family, e.peer_addr, e.local_addr, e.local_port) for e in served} == {
        (socket.AF_INET6, "127.0.0.1", "127.0.0.1", port)
    }
    assert not [e for e in evs if "::ffff:" in e.peer_addr + e.local_addr]


def test_a_program_that_cannot_load_takes_the_group_down_with_nothing_left_loaded(
        headers: HeadersChoice, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group's programs are loaded on a thread per CPU before any is attached: one that cannot
    load fails the group with its own error, and the ones loaded beside it are unloaded too."""
    # first among the data programs: the others are loaded (at once) but not yet attached when it fails
    broken = (("raw:sock_recv_length", "sock__no_such_program"), *registry.DATA_PROGRAMS["socket"])
    monkeypatch.setitem(registry.DATA_PROGRAMS, "socket", broken)
    with BpfCapture(on_event=Collector(), headers=headers, runtime_dir=RUNTIME_DIR, data_hooks="socket") as cap:
        cap.load()
        before = loaded_prog_ids()
        state = cap.attach({"socket"})["socket"]
        assert state.state == "failed" and "sock__no_such_program" in state.reason
        assert cap.program_ids("socket") == [] and loaded_prog_ids() == before


def test_socket_layer_that_cannot_attach(headers: HeadersChoice, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket-layer program that fails to attach (here: a tracepoint this kernel lacks): with
    data_hooks "auto" the group comes up on the syscall tracepoints and captures; with "socket"
    it fails and says why."""
    port = free_port()
    broken = (*registry.DATA_PROGRAMS["socket"], ("raw:hostagent_no_such_tracepoint", "sock__recv_length"))
    monkeypatch.setitem(registry.DATA_PROGRAMS, "socket", broken)
    col = Collector()
    with BpfCapture(on_event=col, headers=headers, runtime_dir=RUNTIME_DIR, data_hooks="socket") as cap:
        cap.load()
        state = cap.attach({"socket"})["socket"]
        assert state.state == "failed"
        assert "hostagent_no_such_tracepoint" in state.reason and cap.program_ids("socket") == []
    with BpfCapture(on_event=col, headers=headers, runtime_dir=RUNTIME_DIR, data_hooks="auto") as cap:
        cap.load()
        assert cap.attach({"socket"})["socket"].state == "attached"
        assert cap.data_path == "syscalls"
        p = run_child("sendmsg", port)
        out, _ = p.communicate(timeout=10)
        assert p.returncode == 0, out
        drain_until(cap, lambda: len([e for e in col.of(p.pid) if e.kind == D]) >= 2)
        assert [(e.direction, e.data) for e in col.of(p.pid) if e.kind == D] == [
            (Direction.EGRESS, b"a" * 10 + b"b" * 10 + b"c" * 5),
            (Direction.INGRESS, b"a" * 10 + b"b" * 10 + b"c" * 5),
        ]


def test_raw_records_and_an_on_event_that_fails(headers: HeadersChoice) -> None:
    """raw_records=True hands on_event each record's bytes (what bench/capacity.py records); an
    exception from on_event costs that record only and is counted."""
    target: list[int] = []
    got: list[CaptureEvent] = []

    def on_event(rec: bytes) -> None:
        e = ev.decode(rec, len(rec))
        assert type(rec) is bytes and len(rec) == ev.HDR_SIZE + len(e.data)
        if target and e.pid == target[0] and e.kind == EventKind.EXEC:
            raise RuntimeError("a pipeline bug")
        got.append(e)

    with BpfCapture(on_event=on_event, raw_records=True, headers=headers,  # type: ignore[arg-type]
                    runtime_dir=RUNTIME_DIR) as cap:  # fmt: skip
        cap.load()
        assert cap.attach({"process"})["process"].state == "attached"
        cap.poll(0)
        p = subprocess.Popen(["/bin/true"])
        target.append(p.pid)
        p.wait(5)
        drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in got if e.pid == p.pid))
        assert [(e.kind, e.comm) for e in got if e.pid == p.pid] == [(EventKind.EXIT, "true")]
        assert cap.callback_errors == 1 and cap.drop_counts()["callback_errors"] == 1
        assert cap.events_seen >= len(got) + 1


def test_disabled_flag_keeps_maps_but_emits_nothing(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    cap.set_socket_enabled(False)
    try:
        evs = finish(cap, col, run_child("sendmsg", port))
    finally:
        cap.set_socket_enabled(True)
    assert [e.kind for e in evs] == [EventKind.EXEC, EventKind.EXIT]


def test_payload_of_16_kib(headers: HeadersChoice) -> None:
    port = free_port()
    col = Collector()
    with BpfCapture(on_event=col, payload_bytes=16384, headers=headers, runtime_dir=RUNTIME_DIR) as cap:
        cap.load()
        assert cap.attach({"socket", "process"})["socket"].state == "attached"
        evs = finish(cap, col, run_child("huge", port))
    c, s = conn_fds(evs)
    (sent,) = [e for e in evs if e.kind == D and e.fd == c]
    assert (sent.size, sent.data) == (16384, bytes(range(256)) * 64)
    assert data(evs, s, Direction.INGRESS) == bytes(range(256)) * 64


@pytest.mark.parametrize(("payload", "mode"), [(256, "socket"), (700, "syscalls"), (4096, "socket")])
def test_tail_with_other_payload_sizes(headers: HeadersChoice, payload: int, mode: str) -> None:
    """The tail is min(512, payload_bytes) bytes: the programs load, and copy it, whatever the head
    size (a scratch buffer sized for the head only was refused by the verifier below 1024)."""
    port = free_port()
    col = Collector()
    with BpfCapture(on_event=col, payload_bytes=payload, headers=headers, runtime_dir=RUNTIME_DIR,
                    data_hooks=mode) as cap:
        cap.load()
        assert cap.attach({"socket", "process"})["socket"].state == "attached"
        evs = finish(cap, col, run_child("big", port))
    c, _ = conn_fds(evs)
    (sent,) = [e for e in evs if e.kind == D and e.fd == c]
    body = bytes(range(256)) * 20
    assert (sent.size, sent.data, sent.tail) == (5120, body[:payload], body[-min(512, payload):])


def test_agent_own_process_is_excluded(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    with socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port))
        ls.listen(1)
        with socket.create_connection(("127.0.0.1", port)) as c:
            s, _ = ls.accept()
            c.sendall(b"from the agent itself")
            s.recv(100)
            s.close()
    p = subprocess.Popen(["/bin/true"])  # a marker: once its EXIT is seen, our events would be too
    p.wait(5)
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    assert col.of(os.getpid()) == []


def test_mute_stops_data_in_kernel(capture: tuple[BpfCapture, Collector]) -> None:
    port = free_port()
    cap, col = capture
    p = run_child("mute", port)
    assert p.stdout is not None
    fd1, fd2 = (int(x) for x in p.stdout.readline().split())
    cap.mute(p.pid, fd1)
    assert p.stdin is not None
    p.stdin.write("go\n")
    p.stdin.flush()
    evs = finish(cap, col, p)
    assert [e.data for e in evs if e.kind == D and e.fd == fd1] == []
    assert [e.data for e in evs if e.kind == D and e.fd == fd2] == [b"loud-bytes"]
    assert [e.kind for e in evs if e.fd == fd1] == [C, X]  # lifecycle events still come


def test_mute_stops_a_socket_already_found_not_muted(capture: tuple[BpfCapture, Collector]) -> None:
    """A captured call skips the muted lookup while no mute came since its socket was last found not
    muted (sock_info.epoch_seen equal to mute_epoch + exit_epoch, which every mute bumps): a mute
    after that still stops the socket's next call."""
    port = free_port()
    cap, col = capture
    p = run_child("mute-late", port)
    assert p.stdout is not None and p.stdin is not None
    fd1, fd2 = (int(x) for x in p.stdout.readline().split())
    cap.mute(p.pid, fd2)
    exits0 = cap._bpf[b"exit_epoch"][ctypes.c_int(0)].value
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "sent"
    drain_until(cap, lambda: any(e.kind == D and e.fd == fd1 for e in col.of(p.pid)))
    info = cap.socket_info(p.pid, fd1)
    epoch = cap._bpf[b"mute_epoch"][ctypes.c_int(0)].value
    exits = cap._bpf[b"exit_epoch"][ctypes.c_int(0)].value
    assert epoch > 0 and info is not None
    # its next call would skip the lookup (exit_epoch: bumped by any process's exit since the call)
    assert exits0 + epoch <= info.epoch_seen <= exits + epoch
    cap.mute(p.pid, fd1)
    p.stdin.write("go\n")
    p.stdin.flush()
    evs = finish(cap, col, p)
    assert [e.data for e in evs if e.kind == D and e.fd == fd1] == [b"before"]
    assert [e.data for e in evs if e.kind == D and e.fd == fd2] == []


def test_an_opened_connection_is_named_and_found_current_by_its_opening(
    capture: tuple[BpfCapture, Collector],
) -> None:
    """accept() and connect() leave their socket's entry named (its ACCEPT or CONNECT record in the
    ring names the connection: no data record carries comm or cgroup id) and found current and not
    muted (epoch_seen: the first data call skips the proc_gen and muted lookups, as later ones do).
    Named at its opening, the entry holds its socket's shed mark as it was then (shed_seen): a mark
    left by an earlier socket at that slot is no loss of this one, a mark written since is (on the
    socket path, whose shed calls mark their socket's slot: shed_marks)."""
    port = free_port()
    cap, col = capture
    one = ctypes.c_int(0)
    marks = cap._bpf[b"shed_marks"]
    exit_epoch = cap._bpf[b"exit_epoch"]

    def epoch_sum() -> int:
        shed = cap._bpf[b"shed_state"][one].epoch
        return cap._bpf[b"mute_epoch"][one].value + exit_epoch[one].value + shed

    def mark_all(value: int) -> None:
        for i in range(len(marks)):
            marks[ctypes.c_int(i)] = ctypes.c_uint32(value)

    def epochs_move() -> None:  # as a process exit does: the next data call looks at its mark
        exit_epoch[one] = ctypes.c_uint32(exit_epoch[one].value + 1)

    socket_path = cap.data_path == registry.SOCKET_DATA
    mark_all(7)  # left by earlier sockets, say
    try:
        before = epoch_sum()
        p = run_child("opened", port)
        assert p.stdout is not None and p.stdin is not None
        fds = [int(x) for x in p.stdout.readline().split()]
        after = epoch_sum()
        infos = [cap.socket_info(p.pid, fd) for fd in fds]
        assert all(i is not None and i.named == 1 for i in infos)
        assert all(i is not None and before <= i.epoch_seen <= after for i in infos)
        if socket_path:
            assert all(i is not None and i.shed_seen == 7 for i in infos)
        epochs_move()
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "sent"
        mark_all(9)  # the second connection's slots marked since its opening: calls of it were shed
        epochs_move()
        p.stdin.write("go\n")
        p.stdin.flush()
        evs = finish(cap, col, p)
    finally:
        mark_all(0)
    got = {e.fd: (e.data, e.comm, e.cgroup_id, e.lost) for e in evs if e.kind == D}  # one each
    lost2 = 1 if socket_path else 0  # the syscall path counts a shed call on the entry itself
    assert got == {fds[0]: (b"one", "", 0, 0), fds[1]: (b"one", "", 0, 0),
                   fds[2]: (b"two", "", 0, lost2), fds[3]: (b"two", "", 0, lost2)}  # fmt: skip
    opened = [e for e in evs if e.kind in (A, C)]
    assert len(opened) == 4 and all(e.comm.startswith("python") and e.cgroup_id for e in opened)


def test_a_dead_process_entries_stop_at_pid_reuse(capture: tuple[BpfCapture, Collector]) -> None:
    """A socket entry is its process's only while that process lives (sock_info.gen against
    proc_gen): a process that reuses the pid of one that exited with a captured socket open does
    not have its Unix socket, on the same fd number, taken for that socket. The data calls skip
    the proc_gen lookup while no process exited since the entry was last found current
    (exit_epoch): the exit itself must end that. A real pid reuse, forced with ns_last_pid."""
    port = free_port()
    cap, col = capture
    ls = socket.socket()  # the agent's own process: its end is not traced
    ls.bind(("127.0.0.1", port))
    ls.listen(4)
    try:
        first = run_child("exit-held", port)
        assert first.stdout is not None and first.stdin is not None
        conn, _ = ls.accept()
        conn.sendall(b"ok")
        fd = int(first.stdout.readline())
        pid = first.pid
        drain_until(cap, lambda: len([e for e in col.of(pid) if e.kind == D and e.fd == fd]) == 2)
        assert [e.data for e in col.of(pid) if e.kind == D and e.fd == fd] == [b"first-life", b"ok"]
        first.stdin.write("exit\n")
        first.stdin.flush()
        assert first.wait(10) == 0
        conn.close()
        info = cap.socket_info(pid, fd)
        assert info is not None  # the kernel closed it, no close() was seen: the entry is left
        second = None
        mark = len(col.events)
        for _ in range(20):
            Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
            candidate = run_child("unix-first", port)
            if candidate.pid == pid:
                second = candidate
                break
            finish(cap, col, candidate)
        if second is None:
            pytest.skip("another process took the pid every time")
        out, _ = second.communicate(timeout=10)
        assert second.returncode == 0 and out == f"{fd}\ndone\n", out  # the dead one's fd number
        drain_until(cap, lambda: any(e.kind == EventKind.EXIT and e.pid == pid for e in col.events[mark:]))
        # no call of the new process taken for the dead one's socket: not its startup's close() of a
        # file on that number, nor its Unix socket's bytes
        assert [(e.kind, e.data) for e in col.events[mark:] if e.pid == pid and e.kind in (D, C, A, X)] == []
        assert cap.socket_info(pid, fd) is None
    finally:
        ls.close()


def test_a_connection_per_request_reuses_its_fds_slots(capture: tuple[BpfCapture, Collector]) -> None:
    """A closed socket's entry keeps its slot (gen CLOSED_GEN: no socket to lookups, the seeding
    included) and the fd number's next socket is written over it, instead of a delete at each close
    and an LRU insert at each socket()/accept(); every connection still carries its own ends."""
    port = free_port()
    cap, col = capture
    p = run_child("per-request", port)
    assert p.stdout is not None and p.stdin is not None
    rows = [tuple(int(x) for x in p.stdout.readline().split()) for _ in range(3)]
    cfd, sfd = rows[0][:2]
    assert {r[:2] for r in rows} == {(cfd, sfd)}
    drain_until(cap, lambda: sum(e.kind == X for e in col.of(p.pid)) == 6)
    sockets = cap._bpf[b"sockets"]
    for fd in (cfd, sfd):
        assert cap.socket_info(p.pid, fd) is None
        assert sockets[ctypes.c_uint64((p.pid << 32) | fd)].gen == ev.CLOSED_GEN
    # each handshake's server end went through its slot in handshakes, taken by accept() (sk 0)
    taken = {h.peer.port: h.end.sk for h in cap._bpf[b"handshakes"].values() if h.peer.port in {r[2] for r in rows}}
    assert taken == {r[2]: 0 for r in rows}
    p.stdin.write("go\n")
    p.stdin.flush()
    evs = finish(cap, col, p)
    got = [[(e.kind, e.fd, e.local_port, e.peer_port, e.data) for e in conn] for conn in connections(evs)]
    want = []
    for i, (_, _, cport) in enumerate(rows):
        want.append([(C, cfd, cport, port, b""), (D, cfd, cport, port, b"request%d" % i),
                     (D, cfd, cport, port, b"response%d" % i), (X, cfd, cport, port, b"")])
        want.append([(A, sfd, port, cport, b""), (D, sfd, port, cport, b"request%d" % i),
                     (D, sfd, port, cport, b"response%d" % i), (X, sfd, port, cport, b"")])
    assert sorted(got, key=str) == sorted(want, key=str)


def test_seed_existing_sockets(headers: HeadersChoice) -> None:
    """A connection opened before the program was loaded is seeded from /proc; one whose data call
    comes first is adopted by that call from the kernel's socket (as one received from another
    process is), and seeding then leaves the programs' entry alone."""
    port = free_port()
    p = run_child("hold", port)
    assert p.stdout is not None and p.stdin is not None
    cfd, sfd = (int(x) for x in p.stdout.readline().split())
    col = Collector()
    with BpfCapture(on_event=col, headers=headers, runtime_dir=RUNTIME_DIR) as cap:
        cap.load()
        cap.attach({"socket"})
        ids = cap.program_ids("socket")
        # lifecycle programs (7) + the data path's: its opens and copies (the TCP states' program and
        # the exits of socket, connect, accept and of dup/dup2/dup3/fcntl: 5, no enter programs), the
        # *mmsg pairs' 3, the datagram receives' exit and 3 socket-layer programs (tcp_sendmsg_locked
        # is on this kernel), and what the data programs tail-call: the raw HTTP/2 frame walker and
        # the tail copy (the tracepoint programs' walker is the syscall path's)
        assert cap.data_path == "socket"
        assert len(ids) == 21 and set(ids) <= loaded_prog_ids()

        def say(line: str) -> None:
            p.stdin.write(line + "\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
            assert p.stdout.readline() == "ok\n"  # type: ignore[union-attr]
            cap.poll(10)

        assert cap.socket_info(p.pid, cfd) is None
        say("adopted")  # before the seeding: the data calls adopt both ends
        info = cap.socket_info(p.pid, cfd)
        # a TCP socket by its sk_type and sk_protocol (offsets from BTF): a stream, as seeding's
        assert info is not None and (info.family, info.sock_type, info.peer_port) == (2, 1, port) and info.ts
        drain_until(cap, lambda: len(col.of(p.pid)) >= 2)
        cap.seed_existing_sockets()
        assert cap.socket_info(p.pid, cfd).ts == info.ts  # type: ignore[union-attr]  # kept, not /proc's
        say("seen")
        drain_until(cap, lambda: len(col.of(p.pid)) >= 4)
        assert [(e.fd, e.direction, e.data, e.peer_port, e.local_port) for e in col.of(p.pid)] == [
            (cfd, Direction.EGRESS, b"adopted\n", port, col.of(p.pid)[0].local_port),
            (sfd, Direction.INGRESS, b"adopted\n", col.of(p.pid)[0].local_port, port),
            (cfd, Direction.EGRESS, b"seen\n", port, col.of(p.pid)[0].local_port),
            (sfd, Direction.INGRESS, b"seen\n", col.of(p.pid)[0].local_port, port),
        ]
        assert col.of(p.pid)[0].local_port not in (0, port)
        cap.detach("socket")
        assert cap.program_ids("socket") == []
        # detached programs are unloaded, not just unhooked (raw tracepoint links are freed after
        # an RCU grace period: a moment later)
        deadline = time.monotonic() + 5
        while set(ids) & loaded_prog_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not set(ids) & loaded_prog_ids()
        assert cap.attach({"socket"})["socket"].state == "attached"  # and come back
        assert set(cap.program_ids("socket")) <= loaded_prog_ids()
        # closes went unseen while detached: the maps were reset and re-seeded by attach() itself
        info = cap.socket_info(p.pid, cfd)
        assert info is not None and (info.peer_port, info.ts) == (port, 0)  # ts 0: from /proc
        assert cap.seed_existing_sockets() >= 2  # the count attach() got; /proc is not walked again
        say("again")
        drain_until(cap, lambda: len(col.of(p.pid)) >= 6)
        assert [e.data for e in col.of(p.pid)][4:] == [b"again\n", b"again\n"]
        assert cap.drop_counts() == {
            "ringbuf_full": 0, "inflight_full": 0, "read_fault": 0, "mmsg_truncated": 0, "h2_unwalked": 0,
            "callback_errors": 0,
        }  # fmt: skip
    p.stdin.close()
    p.wait(10)


def test_adopted_connected_udp_socket_is_a_datagram_socket(headers: HeadersChoice) -> None:
    """A connected UDP socket first met at a data call (opened before the programs were loaded, or
    received from another process) is adopted as a datagram socket, by its sk_type and sk_protocol
    (offsets from BTF). Before, skc_state alone (ESTABLISHED) could not tell it from TCP: type 0,
    taken for a TCP stream downstream."""
    port = free_port()
    p = run_child("hold-udp", port)
    assert p.stdout is not None and p.stdin is not None
    cfd, sfd, cport = (int(x) for x in p.stdout.readline().split())
    col = Collector()
    with BpfCapture(on_event=col, headers=headers, runtime_dir=RUNTIME_DIR, data_hooks="socket") as cap:
        cap.load()
        cap.attach({"socket"})
        assert cap.sock_offsets is not None and cap.sock_offsets.sk_type is not None
        p.stdin.write("adopted\n")
        p.stdin.flush()
        assert p.stdout.readline() == "ok\n"
        c, s = cap.socket_info(p.pid, cfd), cap.socket_info(p.pid, sfd)
        assert c is not None and s is not None
        assert (c.family, c.sock_type, c.peer_port, c.local_port) == (2, 2, port, cport)
        assert (s.family, s.sock_type, s.peer_port, s.local_port) == (2, 2, cport, port)
        drain_until(cap, lambda: len(col.of(p.pid)) >= 2)
        assert [(e.fd, e.direction, e.data, e.sock_type, e.peer_port, e.local_port) for e in col.of(p.pid)] == [
            (cfd, Direction.EGRESS, b"adopted\n", 2, port, cport),
            (sfd, Direction.INGRESS, b"adopted\n", 2, cport, port),
        ]
    p.stdin.close()
    p.wait(10)


def test_a_data_call_racing_close_adopts_nothing(headers: HeadersChoice) -> None:
    """A thread's recv() on a socket the process has no entry for returns after another thread
    closed its fd (the call holds its own reference to the file): the fd no longer names the
    socket (the fd table read through offsets from BTF), so it is not adopted. Before, the entry
    was made for the closed fd, and the next socket given that number would have taken it."""
    port = free_port()
    p = run_child("close-race", port)
    assert p.stdout is not None and p.stdin is not None
    cfd, sfd = (int(x) for x in p.stdout.readline().split())
    with BpfCapture(on_event=Collector(), headers=headers, runtime_dir=RUNTIME_DIR, data_hooks="socket") as cap:
        cap.load()
        cap.attach({"socket"})
        assert cap.sock_offsets is not None and cap.sock_offsets.fd_path is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline() == "ok\n"
        assert cap.socket_info(p.pid, sfd) is None
        c = cap.socket_info(p.pid, cfd)  # the sender's, adopted at its send: its fd is open
        assert c is not None and c.peer_port == port
        p.stdin.write("done\n")
        p.stdin.flush()
    p.stdin.close()
    p.wait(10)


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {int(line.split(":")[0]) for line in out.splitlines() if line[:1].isdigit()}


def test_ctypes_mirror_matches_what_bcc_builds(headers: HeadersChoice) -> None:
    from bcc import BPF

    from hostagent.model import Direction as Dir
    from hostagent.probes.sources import bpf_dir

    asserts = [f'_Static_assert(EVENT_{k.name} == {k.value}, "kind");' for k in EventKind]
    asserts += [f'_Static_assert(DIR_{d.name} == {d.value}, "dir");' for d in Dir]
    asserts += [f'_Static_assert(OP_{op.upper()} == {i}, "op");' for i, op in enumerate(ev.SYSCALL_OPS)]
    asserts += [f'_Static_assert(DROP_{n.upper()} == {i}, "drop");' for i, n in enumerate(ev.DROP_CAUSES)]
    text = (
        '#include "events.h"\n'
        + "\n".join(asserts)
        + "\nBPF_ARRAY(hdr, struct event_hdr, 1);\nBPF_ARRAY(sock, struct sock_info, 1);\n"
        + "int noop(void *ctx) { return 0; }\n"
    )
    b = BPF(text=text.encode(), cflags=[f"-I{bpf_dir()}"])
    try:
        for table, mirror in (("hdr", ev.EventHdr), ("sock", ev.SockInfo)):
            leaf = b[table.encode()].Leaf
            assert ctypes_sizeof(leaf) == ctypes_sizeof(mirror)
            bcc_fields = [(f[0], getattr(leaf, f[0]).offset) for f in leaf._fields_ if not f[0].startswith("__pad")]
            ours = [(f[0], getattr(mirror, f[0]).offset) for f in mirror._fields_]
            assert bcc_fields == ours
    finally:
        b.cleanup()


def ctypes_sizeof(cls: type) -> int:
    import ctypes

    return ctypes.sizeof(cls)


# --- sockets followed across fork(), and each socket's own end -----------------------------------

FORKS = textwrap.dedent(
    """
    import ctypes, os, socket, sys, time
    mode, port = sys.argv[1], int(sys.argv[2])
    def listener():
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", port)); ls.listen(4)
        return ls
    def recv_exactly(s, n):
        got = b""
        while len(got) < n:
            got += s.recv(n - len(got))
        return got
    if mode == "acceptfork":                     # a postmaster: accept, fork, close at once
        ls = listener(); print("ready", flush=True)
        kids = []
        for i in range(2):
            s, peer = ls.accept()
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                ls.close(); os.close(w)
                os.read(r, 1)                    # go: the parent closed its copy, reused the number
                got = s.recv(100); s.sendall(b"pong:" + got); s.close(); os._exit(0)
            os.close(r)
            kids.append((pid, w, s.fileno(), peer[1]))
            s.close()
        for pid, w, fd, peer_port in kids:
            print(pid, fd, peer_port, flush=True)
        for pid, w, fd, peer_port in kids:
            os.write(w, b"g"); os.close(w); os.waitpid(pid, 0)
    elif mode == "clientfork":                   # a connection opened before fork, used after
        ls = listener()
        c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
        print(c.fileno(), s.fileno(), c.getsockname()[1], flush=True)
        def send():
            c.sendall(b"from-%d;" % os.getpid())
        send()                                   # the parent's own first: its entry is named
        kid = os.fork()
        if kid == 0:                             # a child: reads a file, then writes on c
            with open("/proc/self/stat", "rb") as f:
                f.read()
            send(); os._exit(0)
        os.waitpid(kid, 0)
        mid = os.fork()
        if mid == 0:                             # a double fork: the grandchild writes on c
            if os.fork() == 0:
                time.sleep(0.2); send(); os._exit(0)
            os._exit(0)
        os.waitpid(mid, 0)
        got = b""
        while got.count(b";") < 3:
            got += s.recv(100)
        print(kid, mid, got.decode(), flush=True)
    elif mode == "inetd":                        # busybox httpd: the child moves it to fds 0 and 1
        ls = listener(); print("ready", flush=True)
        s, peer = ls.accept()
        print(s.fileno(), peer[1], flush=True)
        pid = os.fork()
        if pid == 0:
            ls.close()
            fd = s.detach()
            os.dup2(fd, 0); os.close(fd); os.dup2(0, 1)
            got = os.read(0, 100); os.write(1, b"pong:" + got)
            os._exit(0)
        s.close()
        os.waitpid(pid, 0)
        print(pid, flush=True)
    elif mode == "fcntldup":                     # socket.dup(): fcntl(F_DUPFD_CLOEXEC), not dup()
        ls = listener(); c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
        d = c.dup(); cfd = c.fileno(); c.close()
        d.sendall(b"via-the-copy"); recv_exactly(s, 12)
        s.sendall(b"back"); recv_exactly(d, 4)
        print(cfd, d.fileno(), d.getsockname()[1], flush=True)
        d.close()
    elif mode == "dups":                         # every kind of copy, and fcntls that copy nothing
        import fcntl
        ls = listener()
        os.close(0)                              # the next socket gets fd 0: fcntl's 0 return value
        c0 = socket.create_connection(("127.0.0.1", port)); s0, _ = ls.accept()
        c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
        c2 = socket.create_connection(("127.0.0.1", port)); s2, _ = ls.accept()
        assert c0.fileno() == 0
        cfd, c2fd, c2port = c.fileno(), c2.fileno(), c2.getsockname()[1]
        fcntl.fcntl(cfd, fcntl.F_SETFL, fcntl.fcntl(cfd, fcntl.F_GETFL))  # returns 0: no copy to fd 0
        fcntl.fcntl(cfd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)                 # likewise
        libc = ctypes.CDLL(None, use_errno=True)
        d = libc.dup(cfd); assert d > 0          # dup(), not CPython's fcntl(F_DUPFD_CLOEXEC)
        os.dup2(cfd, c2fd, inheritable=False)    # dup3() over a tracked socket: c2's entry ends
        os.dup2(cfd, 50)                         # dup2() onto a free number
        f = fcntl.fcntl(cfd, fcntl.F_DUPFD, 60)  # F_DUPFD: the lowest free number >= 60
        c0.sendall(b"zero"); recv_exactly(s0, 4)
        for fd, word in ((d, b"d;"), (c2fd, b"c2;"), (50, b"50;"), (f, b"f;")):
            os.write(fd, word)
        recv_exactly(s, 10)
        print(cfd, c2fd, d, f, c0.getsockname()[1], c.getsockname()[1], c2port, flush=True)
    elif mode == "forkexec":                     # fd numbers of the parent's sockets reused for files
        import subprocess
        ls = listener(); c = socket.create_connection(("127.0.0.1", port)); s, _ = ls.accept()
        kid = os.fork()
        if kid == 0:                             # close_range(), then a file on fd 3
            os.closerange(3, 64)
            fd = os.open("/proc/self/stat", os.O_RDONLY); os.read(fd, 100)
            os._exit(0 if fd == ls.fileno() else 1)
        os.waitpid(kid, 0)
        prog = "import os; fd = os.open('/proc/self/stat', os.O_RDONLY); os.read(fd, 100)"
        ex = subprocess.Popen([sys.executable, "-c", prog])  # exec: close_range + O_CLOEXEC
        assert ex.wait() == 0
        print(kid, ex.pid, flush=True)
    elif mode == "locals":                       # non-blocking connect; accept(fd, NULL, NULL)
        ls = listener()
        c = socket.socket(); c.setblocking(False)
        import errno; assert c.connect_ex(("127.0.0.1", port)) == errno.EINPROGRESS
        libc = ctypes.CDLL(None, use_errno=True)
        sfd = libc.accept(ls.fileno(), None, None); assert sfd >= 0, ctypes.get_errno()
        s = socket.socket(fileno=sfd)
        c.setblocking(True); c.sendall(b"hello"); recv_exactly(s, 5)
        print(c.fileno(), sfd, c.getsockname()[1], flush=True)
    print("done", flush=True)
    """
)


def run_forks(mode: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", FORKS, mode, str(port)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True
    )


def socket_events(evs: list[CaptureEvent]) -> list[CaptureEvent]:
    return [e for e in evs if e.kind in (D, C, A, X)]


def test_accept_then_fork_child_serves(capture: tuple[BpfCapture, Collector]) -> None:
    """A postmaster-like server: the parent accepts and closes its copy right after fork(), then
    accepts the next connection under the very same fd number; each child still reads and writes
    its own connection, as its own pid."""
    port = free_port()
    cap, col = capture
    p = run_forks("acceptfork", port)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    client_ports = [cl.getsockname()[1] for cl in clients]
    kids = [tuple(int(x) for x in p.stdout.readline().split()) for _ in range(2)]
    for cl, word in zip(clients, (b"one", b"two")):
        cl.sendall(word)
    assert [cl.recv(100) for cl in clients] == [b"pong:one", b"pong:two"]
    for cl in clients:
        cl.close()
    assert p.stdout.read() == "done\n" and p.wait(10) == 0
    drain_until(cap, lambda: all(any(e.kind == EventKind.EXIT for e in col.of(pid)) for pid, _, _ in kids))
    (_, fd, port1), (_, fd2, port2) = kids
    assert fd == fd2  # the parent reused the number: only the fork-time snapshot tells them apart
    assert [port1, port2] == client_ports
    for (pid, _, peer_port), word in zip(kids, (b"one", b"two")):
        got = [(e.fd, e.direction, e.data, e.peer_addr, e.peer_port, e.local_addr, e.local_port)
               for e in socket_events(col.of(pid)) if e.kind == D]  # fmt: skip
        assert got == [
            (fd, Direction.INGRESS, word, "127.0.0.1", peer_port, "127.0.0.1", port),
            (fd, Direction.EGRESS, b"pong:" + word, "127.0.0.1", peer_port, "127.0.0.1", port),
        ]
        assert [e.fd for e in col.of(pid) if e.kind == X][-1] == fd  # its close of the connection
    parent = socket_events(col.of(p.pid))
    assert [(e.kind, e.fd, e.peer_port, e.local_addr, e.local_port) for e in parent if e.fd == fd] == [
        (A, fd, port1, "127.0.0.1", port), (X, fd, port1, "127.0.0.1", port),
        (A, fd, port2, "127.0.0.1", port), (X, fd, port2, "127.0.0.1", port),
    ]  # fmt: skip
    assert [e for e in parent if e.kind == D] == []
    forks = [(e.pid, e.size, e.comm) for e in col.events if e.kind == EventKind.FORK and e.size == p.pid]
    comm = Path(sys.executable).name[:15]  # the kernel's comm: the file name the server was exec'd by
    assert forks == [(kids[0][0], p.pid, comm), (kids[1][0], p.pid, comm)]


def test_child_and_daemonised_grandchild_inherit_a_client_socket(capture: tuple[BpfCapture, Collector]) -> None:
    """A connection made before fork() is followed in a child and, through a double fork whose
    middle process never touched it and has exited, in a grandchild; a file the child reads
    is not taken for a socket."""
    port = free_port()
    cap, col = capture
    p = run_forks("clientfork", port)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and out.endswith("done\n"), out
    head, tail, _ = out.split("\n", 2)
    cfd, sfd, cport = (int(x) for x in head.split())
    kid_s, mid_s, got = tail.split(" ", 2)
    kid, mid = int(kid_s), int(mid_s)
    senders = [int(part[5:]) for part in got.split(";") if part]
    assert len(senders) == 3 and senders[:2] == [p.pid, kid] and senders[2] not in (p.pid, kid, mid)
    grandchild = senders[2]
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(grandchild)))
    for pid in senders[1:]:
        sent = [(e.fd, e.direction, e.data, e.peer_port, e.local_addr, e.local_port, bool(e.comm))
                for e in socket_events(col.of(pid)) if e.kind == D]  # fmt: skip
        # a process's first event on an inherited socket names it (comm), as a new connection
        # does, although the parent's own event had named the parent's entry before the fork
        assert sent == [(cfd, Direction.EGRESS, b"from-%d;" % pid, port, "127.0.0.1", cport, True)]
    assert socket_events(col.of(mid)) == []  # it closed nothing and sent nothing
    (connect,) = [e for e in col.of(p.pid) if e.kind == C]
    assert (connect.fd, connect.local_addr, connect.local_port) == (cfd, "127.0.0.1", cport)
    assert data(col.of(p.pid), sfd, Direction.INGRESS) == got.encode()


def test_local_end_after_nonblocking_connect_and_from_bind(capture: tuple[BpfCapture, Collector]) -> None:
    """The client's ephemeral port arrives with the handshake after connect() returned
    EINPROGRESS; accept(fd, NULL, NULL) names no peer, so the local end is the listener's bind."""
    port = free_port()
    cap, col = capture
    p = run_forks("locals", port)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 0 and out.endswith("done\n"), out
    cfd, sfd, cport = (int(x) for x in out.split()[:3])
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    evs = col.of(p.pid)
    assert [(e.data, e.local_addr, e.local_port) for e in evs if e.kind == D and e.fd == cfd] == [
        (b"hello", "127.0.0.1", cport)
    ]
    (acc,) = [e for e in evs if e.kind == A]
    # no peer named: all zero
    want = (sfd, socket.AF_INET, "0.0.0.0", 0, "127.0.0.1", port)
    assert (acc.fd, acc.family, acc.peer_addr, acc.peer_port, acc.local_addr, acc.local_port) == want
    assert [(e.data, e.local_port) for e in evs if e.kind == D and e.fd == sfd] == [(b"hello", port)]


def test_dup2_to_stdin_and_stdout_is_one_stream(capture: tuple[BpfCapture, Collector]) -> None:
    """busybox httpd's child: dup2(conn, 0), close(conn), dup2(0, 1), read fd 0, write fd 1. Both
    directions are named by the accepted fd, so the tracker sees one connection."""
    port = free_port()
    cap, col = capture
    p = run_forks("inetd", port)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    with socket.create_connection(("127.0.0.1", port)) as cl:
        sfd, peer_port = (int(x) for x in p.stdout.readline().split())
        cl.sendall(b"ping")
        assert cl.recv(100) == b"pong:ping"
    kid = int(p.stdout.readline())
    assert p.stdout.read() == "done\n" and p.wait(10) == 0
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(kid)))
    got = [(e.kind, e.fd, e.direction, e.data, e.peer_port, e.local_port)
           for e in socket_events(col.of(kid))]  # fmt: skip
    assert [g for g in got if g[0] == D] == [
        (D, sfd, Direction.INGRESS, b"ping", peer_port, port),
        (D, sfd, Direction.EGRESS, b"pong:ping", peer_port, port),
    ]
    # close(conn) after the first dup2 ends the original fd's entry (named sfd too); the
    # listener's close in the child settles it and reports it (fd 3 in the parent, too)
    assert [g[1] for g in got if g[0] == X] == [3, sfd]


def test_a_copy_made_by_fcntl_dupfd_is_followed(capture: tuple[BpfCapture, Collector]) -> None:
    """CPython's socket.dup() / os.dup() / socket.fromfd() copy with fcntl(F_DUPFD_CLOEXEC): after
    the original is closed, the copy's bytes are still captured, named by the original's fd."""
    port = free_port()
    cap, col = capture
    p = run_forks("fcntldup", port)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and out.endswith("done\n"), out
    cfd, dfd, cport = (int(x) for x in out.split()[:3])
    assert dfd != cfd
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    client = [(e.kind, e.fd, e.direction, e.data, e.local_port) for e in socket_events(col.of(p.pid))
              if e.peer_port == port and e.kind in (D, X)]  # fmt: skip
    # c.close() ends the original's entry; the copy's bytes and close are named by the original fd
    assert client == [
        (X, cfd, Direction.EGRESS, b"", cport),
        (D, cfd, Direction.EGRESS, b"via-the-copy", cport),
        (D, cfd, Direction.INGRESS, b"back", cport),
        (X, cfd, Direction.EGRESS, b"", cport),
    ]


def test_dup_dup2_dup3_fcntl_copies_and_fcntls_that_copy_nothing(capture: tuple[BpfCapture, Collector]) -> None:
    """dup(), dup2() onto a free number, dup3() over another tracked socket and fcntl(F_DUPFD)
    each make a copy named by the original's fd (dup3 ends the socket it replaced); fcntl(F_SETFL)
    and fcntl(F_SETFD), which return 0 (here the fd of another connection), copy nothing. On the
    socket path one exit program tells them apart by the saved registers (no enter program)."""
    port = free_port()
    cap, col = capture
    p = run_forks("dups", port)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and out.endswith("done\n"), out
    cfd, c2fd, d, f, port0, cport, c2port = (int(x) for x in out.split()[:7])
    assert len({cfd, c2fd, d, f, 50}) == 5 and f >= 60
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(p.pid)))
    client = [(e.kind, e.fd, e.data, e.local_port) for e in socket_events(col.of(p.pid))
              if e.peer_port == port and e.kind in (D, X)]  # fmt: skip
    # dup3 ends c2 first; the closes at the interpreter's exit follow the bytes
    assert [x for x in client if x[0] == D] == [
        (D, 0, b"zero", port0),
        (D, cfd, b"d;", cport),
        (D, cfd, b"c2;", cport),
        (D, cfd, b"50;", cport),
        (D, cfd, b"f;", cport),
    ]
    assert client[0] == (X, c2fd, b"", c2port)


def test_files_on_the_parents_socket_numbers_are_not_sockets(capture: tuple[BpfCapture, Collector]) -> None:
    """After close_range() in a forked child, and after exec (O_CLOEXEC, subprocess's close_range),
    the fd numbers the parent's sockets had are the child's files: nothing is inherited."""
    port = free_port()
    cap, col = capture
    p = run_forks("forkexec", port)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0 and out.endswith("done\n"), out
    kid, exec_kid = (int(x) for x in out.split()[:2])
    drain_until(cap, lambda: any(e.kind == EventKind.EXIT for e in col.of(exec_kid)))
    assert socket_events(col.of(kid)) == []
    assert socket_events(col.of(exec_kid)) == []  # python's start-up reads dozens of files on fd 3+
    assert [e.kind for e in socket_events(col.of(p.pid))] == [C, A, X, X, X]  # its own, untouched


LISTENS = textwrap.dedent(
    """
    import socket, sys
    held = []
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"),
                            (socket.AF_INET6, "::"), (socket.AF_INET6, "::1")):
        s = socket.socket(family)
        if address == "::":
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # dual stack
        s.bind((address, 0))  # the kernel picks the port at bind: known at LISTEN
        s.listen()
        held.append(s)
    auto = socket.socket()
    auto.listen()  # bound by listen() itself: its port is picked after LISTEN
    c = socket.create_connection(("127.0.0.1", held[0].getsockname()[1]))  # not a listener
    print(*(s.getsockname()[1] for s in held), auto.getsockname()[1], flush=True)
    sys.stdin.read()
    """
)


def test_listen_names_the_listener_and_its_local_end(capture: tuple[BpfCapture, Collector]) -> None:
    """Each listen() of a port the socket already had is one LISTEN event of the listening
    process, with the family and local end it listens on (a wildcard as an all-zero address)."""
    cap, col = capture
    p = subprocess.Popen([sys.executable, "-c", LISTENS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        v4, any4, any6, v6, auto = (int(x) for x in p.stdout.readline().split())
        drain_until(cap, lambda: sum(e.kind == EventKind.LISTEN for e in col.of(p.pid)) >= 4)
        time.sleep(0.2)
        cap.poll(10)
    finally:
        p.communicate("", timeout=10)
    listens = [(e.family, e.local_addr, e.local_port, e.comm, e.fd, e.cgroup_id > 0)
               for e in col.of(p.pid) if e.kind == EventKind.LISTEN]  # fmt: skip
    comm = Path(sys.executable).name[:15]  # the kernel names a task after the path it ran
    assert listens == [
        (socket.AF_INET, "127.0.0.1", v4, comm, -1, True),
        (socket.AF_INET, "0.0.0.0", any4, comm, -1, True),
        (socket.AF_INET6, "::", any6, comm, -1, True),
        (socket.AF_INET6, "::1", v6, comm, -1, True),
    ]
    assert auto not in (v4, any4, any6, v6)


NO_ADDRESS_ACCEPTS = textwrap.dedent(
    """
    import ctypes, socket, sys
    libc = ctypes.CDLL(None, use_errno=True)
    pairs = []
    # IPv4; true IPv6; an IPv4 client of a dual-stack listener (v4-mapped ends)
    for fam, host, to in ((socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "::1"),
                          (socket.AF_INET6, "::", "127.0.0.1")):
        ls = socket.socket(fam)
        if fam == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        ls.bind((host, 0)); ls.listen()
        c = socket.create_connection((to, ls.getsockname()[1]))
        sfd = libc.accept(ls.fileno(), None, None); assert sfd >= 0, ctypes.get_errno()
        pairs.append((c, socket.socket(fileno=sfd)))
        print(sfd, c.getsockname()[1], end=" ")
    print(flush=True)
    sys.stdin.readline()
    for c, s in pairs:
        c.sendall(b"hi"); assert s.recv(2) == b"hi"
    print("done", flush=True)
    """
)


def test_accept_without_address_peer_in_the_entry(capture: tuple[BpfCapture, Collector]) -> None:
    """accept(fd, NULL, NULL) (libuv): on the socket path the accepted socket's entry has its peer from
    the socket itself as accept() returns (IPv4, IPv6, v4-mapped), and no server handshake leaves an
    ends_by_sk entry behind (before: one per handshake, consumed by the first data call on the socket
    path and never on the syscall path); the syscall path still names no peer."""
    cap, col = capture
    p = subprocess.Popen([sys.executable, "-c", NO_ADDRESS_ACCEPTS], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdin is not None
        nums = [int(x) for x in p.stdout.readline().split()]
        sfds, cports = nums[0::2], nums[1::2]
        cap.poll(10)
        want_addrs = [bytes([127, 0, 0, 1]) + bytes(12), bytes(15) + b"\x01",
                      bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])]
        for sfd, cport, addr in zip(sfds, cports, want_addrs):
            info = cap.socket_info(p.pid, sfd)
            assert info is not None
            if cap.data_path == "socket":
                assert (info.peer_port, bytes(info.peer_addr)) == (cport, addr)
            else:
                assert (info.peer_port, bytes(info.peer_addr)) == (0, bytes(16))
        assert list(cap._bpf[b"ends_by_sk"].items()) == []  # on this kernel the offsets are known
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "done\n"
        drain_until(cap, lambda: sum(e.kind == D and e.fd in sfds for e in col.of(p.pid)) >= 3)
    finally:
        p.communicate("", timeout=10)
    got = [(e.fd, e.peer_addr, e.peer_port) for e in col.of(p.pid) if e.kind == D and e.fd in sfds]
    if cap.data_path == "socket":
        assert got == list(zip(sfds, ["127.0.0.1", "::1", "127.0.0.1"], cports))
    else:
        assert got == [(sfd, "0.0.0.0" if n == 0 else "", 0) for n, sfd in enumerate(sfds)]
