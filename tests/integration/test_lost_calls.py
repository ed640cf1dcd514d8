"""Calls the kernel could not capture (the ring full: shed or refused, counted as drops) must not
make the parser pair a request with another request's response.

Real BPF with a 64 KiB ring that this test lets overflow on purpose (it drains only after every
other burst), a keep-alive HTTP/1.1 client and server on loopback whose every response says which
request it answers (its body is as long as the request number says), and the real tracker and
HTTP/1 parser over the captured events. Before calls were marked lost per socket, the first lost
response shifted every later pair of the connection by one.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from hostagent.capture.tracker import ConnectionTracker
from hostagent.kernel import HeadersChoice
from hostagent.model import CaptureEvent, EventKind, Role
from hostagent.probes.loader import BpfCapture
from hostagent.protocols import http1
from tests.integration.test_bpf_capture import RUNTIME_DIR, headers  # noqa: F401 (the fixture)
from tests.support.ports import free_ports

pytestmark = pytest.mark.root

PORT = free_ports(2)  # and PORT + 1
BURSTS, PER_BURST = 8, 150

# The children's servers: each request head of a keep-alive connection as it arrives, until EOF.
HEADS = textwrap.dedent(
    """
    def heads(s):
        buf = b""
        while True:
            while b"\\r\\n\\r\\n" not in buf:
                more = s.recv(4096)
                if not more:
                    return
                buf += more
            head, _, buf = buf.partition(b"\\r\\n\\r\\n")
            yield head
    """
)

# A keep-alive server answering GET /n with n % 97 + 1 body bytes, and a client sending bursts of
# requests on one connection when told to (a line on stdin), checking every answer.
PAIR = HEADS + textwrap.dedent(
    """
    import socket, sys, threading
    port, bursts, per_burst = (int(a) for a in sys.argv[1:4])
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(1)
    def serve():
        s, _ = ls.accept()
        for head in heads(s):
            n = int(head.split(b" ")[1][1:])
            body = b"x" * (n % 97 + 1)
            s.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
    threading.Thread(target=serve, daemon=True).start()
    c = socket.create_connection(("127.0.0.1", port))
    print("ready", flush=True)
    n = 0
    for _ in range(bursts):
        sys.stdin.readline()
        for _ in range(per_burst):
            n += 1
            c.sendall(b"GET /%d HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n" % n)
            want = n % 97 + 1
            got = b""
            while not got.endswith(b"\\r\\n\\r\\n" + b"x" * want) or len(got.partition(b"\\r\\n\\r\\n")[2]) < want:
                got += c.recv(4096)
        print("burst", flush=True)
    c.close()
    """
)


@pytest.fixture(scope="module", params=["socket", "syscalls"])
def small_ring(headers: HeadersChoice, request: pytest.FixtureRequest) -> Iterator[tuple[BpfCapture, list]]:  # noqa: F811
    events: list[CaptureEvent] = []
    cap = BpfCapture(on_event=events.append, payload_bytes=256, ring_bytes=64 << 10, headers=headers,
                     runtime_dir=RUNTIME_DIR, data_hooks=request.param)
    cap.load()
    cap.attach({"socket"})
    yield cap, events
    cap.close()


def test_lost_calls_never_pair_a_request_with_another_response(small_ring: tuple[BpfCapture, list]) -> None:
    cap, events = small_ring
    proc = subprocess.Popen([sys.executable, "-c", PAIR, str(PORT), str(BURSTS), str(PER_BURST)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    cap.poll(0)
    events.clear()
    drops0 = cap.drop_counts()["ringbuf_full"]
    for burst in range(BURSTS):
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "burst\n"
        if burst % 2:  # every other burst is left in the ring: the next one overflows it
            for _ in range(50):
                cap.poll(0)
    proc.stdin.close()
    assert proc.wait(20) == 0
    for _ in range(50):
        cap.poll(0)
    lost_in_kernel = cap.drop_counts()["ringbuf_full"] - drops0
    mine = [e for e in events if e.pid == proc.pid]

    tracker = ConnectionTracker(lambda: (http1.SPEC,))
    calls = [call for e in mine for call in tracker.handle(e)]
    answered = [c for c in calls if "http.response.body.size" in c.attributes]
    by_role = {role: [c for c in answered if c.role == role] for role in (Role.CLIENT, Role.SERVER)}
    wrong = [(c.role.name, c.attributes["url.path"], c.attributes["http.response.body.size"]) for c in answered
             if c.attributes["http.response.body.size"] != int(c.attributes["url.path"][1:]) % 97 + 1]
    requests = BURSTS * PER_BURST
    assert lost_in_kernel > 100  # the scenario did lose calls ...
    assert wrong == [], f"{len(wrong)} of {len(answered)} spans got another request's answer: {wrong[:5]}"
    print(f"\n{cap.data_path}: {lost_in_kernel} calls lost in the kernel; spans with their answer: "
          f"client {len(by_role[Role.CLIENT])}, server {len(by_role[Role.SERVER])} of {requests} each; "
          f"gaps seen {tracker.stats()['lost_gaps']}")
    for role in (Role.CLIENT, Role.SERVER):  # what fitted in the ring between drains is all there
        assert requests // 10 < len(by_role[role]) < requests
    assert tracker.stats()["lost_gaps"] >= 2
    assert [e for e in mine if e.kind == EventKind.DATA and e.lost] != []
    assert cap.drop_counts()["callback_errors"] == 0


# Two keep-alive connections: "burst N" sends N requests on the fast one (overflowing the ring when
# the test does not drain it); "slow" opens the other and sends GET /slow, whose answer the server
# holds until "answer", when the client reads it.
SLOW_PAIR = HEADS + textwrap.dedent(
    """
    import socket, sys, threading
    port = int(sys.argv[1])
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port)); ls.listen(2)
    release = threading.Event()
    def serve(s, hold):
        for _ in heads(s):
            if hold:
                release.wait()
            s.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    def answered(c):
        got = b""
        while not got.endswith(b"ok"):
            got += c.recv(4096)
    fast = socket.create_connection(("127.0.0.1", port)); s2, _ = ls.accept()
    threading.Thread(target=serve, args=(s2, False), daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()[0]
        if cmd == "slow":  # connected now: its server's first receive begins after the warm-up
            slow = socket.create_connection(("127.0.0.1", port)); s1, _ = ls.accept()
            threading.Thread(target=serve, args=(s1, True), daemon=True).start()
            slow.sendall(b"GET /slow HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
        elif cmd == "burst":
            for n in range(int(line.split()[1])):
                fast.sendall(b"GET /fast HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n")
                answered(fast)
        elif cmd == "answer":
            release.set()
            answered(slow)
        print("done", flush=True)
    """
)


def test_a_connection_that_lost_nothing_keeps_its_waiting_request(small_ring: tuple[BpfCapture, list]) -> None:
    """Another connection's calls are shed while this one waits for a slow answer: only the
    connection that lost calls resynchronises; the waiting request still gets its span."""
    cap, events = small_ring
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PAIR, str(PORT + 1)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"

    def say(line: str) -> None:
        proc.stdin.write(line + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        assert proc.stdout.readline() == "done\n"  # type: ignore[union-attr]

    try:
        for _ in range(50):
            cap.poll(0)
        say("burst 20")  # a ring left shedding by an earlier test captures again (test_bpf_shed)
        for _ in range(50):
            cap.poll(0)
        say("slow")
        for _ in range(50):
            cap.poll(0)  # /slow's request is in (both ends) before anything is shed
        drops0 = cap.drop_counts()["ringbuf_full"]
        say("burst 600")  # not drained meanwhile: the ring overflows, the fast connection's calls shed
        shed = cap.drop_counts()["ringbuf_full"] - drops0
        for _ in range(50):
            cap.poll(0)
        say("burst 40")  # drained: calls are captured again (after at most SHED_ASK - 1 more shed)
        say("answer")
        for _ in range(50):
            cap.poll(0)
    finally:
        proc.stdin.close()
        proc.wait(10)
    tracker = ConnectionTracker(lambda: (http1.SPEC,))
    calls = [call for e in events if e.pid == proc.pid for call in tracker.handle(e)]
    answered = [c for c in calls if "http.response.status_code" in c.attributes]
    slow = sorted(c.role.name for c in answered if c.attributes.get("url.path") == "/slow")
    fast_answered = [c for c in answered if c.attributes.get("url.path") == "/fast"]
    assert shed > 100  # the scenario did shed the fast connection's calls ...
    assert tracker.stats()["lost_gaps"] >= 1  # ... and its parser was told
    assert 0 < len(fast_answered) < 2 * (20 + 600 + 40)
    assert slow == ["CLIENT", "SERVER"]  # ... while /slow, which lost nothing, kept both spans
