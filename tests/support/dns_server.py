"""dnsmasq on 127.0.0.1 with local records and no upstream, and a recorder of DNS client traffic.

Records (``--local=/test/`` makes every other name under .test NXDOMAIN, never forwarded):
    svc.test     A 127.0.0.5 (--address: dnsmasq answers AAAA with NXDOMAIN)
    dual.test    A 127.0.0.6, AAAA ::6
    v4only.test  A 127.0.0.7 (--host-record: AAAA is NOERROR with no answers)
    names outside .test: no upstream to ask
Tests and the fixture recording give it a port from tests.support.ports.

Record tests/fixtures/dns/*.json from the repository root:
    .venv/bin/python -m tests.support.dns_server tests/fixtures/dns
The client is Python sockets (glibc's resolver cannot be pointed at a port without changing
/etc/resolv.conf): unconnected UDP (sendto/recvfrom, peer known per datagram), connected UDP
(send/recv, no peer), an A+AAAA pair sharing one id as glibc sends them, and TCP.
Fixture format: {"source", "segments": [{"dir": "egress"|"ingress" (the client's view),
"ts": ns since start, "peer": [addr, port] | null, "hex"}]}.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.support.ports import free_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@dataclass
class DnsServer:
    port: int
    proc: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> DnsServer:
        self.proc = subprocess.Popen(
            [
                DNSMASQ, "-k", "--no-resolv", "--no-hosts", "--no-poll", "--conf-file=/dev/null",
                "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={self.port}",
                "--user=root", "--pid-file=", "--local=/test/",
                "--address=/svc.test/127.0.0.5",
                "--host-record=dual.test,127.0.0.6,::6", "--host-record=v4only.test,127.0.0.7",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                query(self.port, "svc.test", 1, timeout=0.2)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("dnsmasq did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive query with one question, as stub resolvers send it."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def query(port: int, name: str, qtype: int, qid: int = 0x1234, timeout: float = 2.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(build_query(qid, name, qtype), ("127.0.0.1", port))
        return s.recvfrom(4096)[0]


@dataclass
class Recording:
    t0: int = field(default_factory=time.monotonic_ns)
    segments: list[dict[str, Any]] = field(default_factory=list)

    def add(self, direction: str, data: bytes, peer: Optional[tuple[str, int]]) -> None:
        self.segments.append(
            {"dir": direction, "ts": time.monotonic_ns() - self.t0, "peer": list(peer) if peer else None,
             "hex": data.hex()}
        )  # fmt: skip

    def save(self, path: Path, source: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"source": source, "segments": self.segments}, indent=1) + "\n")


def record(out: Path, port: int) -> None:
    server = DnsServer(port).start()
    try:
        addr = ("127.0.0.1", port)
        # Unconnected UDP: A, AAAA (no data), NXDOMAIN, and an A+AAAA pair sharing an id.
        rec = Recording()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for qid, name, qtype in (
                (0x0A01, "svc.test", 1),
                (0x0A02, "svc.test", 28),
                (0x0A03, "nope.test", 1),
                (0x0A04, "v4only.test", 28),
                (0x0A05, "outside.invalid", 1),
            ):
                q = build_query(qid, name, qtype)
                s.sendto(q, addr)
                rec.add("egress", q, addr)
                data, peer = s.recvfrom(4096)
                rec.add("ingress", data, peer)
            pair = [build_query(0x0B01, "dual.test", 1), build_query(0x0B01, "dual.test", 28)]
            for q in pair:  # back to back, like glibc's sendmmsg of A and AAAA
                s.sendto(q, addr)
                rec.add("egress", q, addr)
            for _ in pair:
                data, peer = s.recvfrom(4096)
                rec.add("ingress", data, peer)
        rec.save(out / "udp_unconnected.json", f"python sendto/recvfrom -> dnsmasq {port}")
        # Connected UDP (send/recv: the syscalls name no peer).
        rec = Recording()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.connect(addr)
            for qid, name, qtype in ((0x0C01, "dual.test", 28), (0x0C02, "SvC.TeSt", 1)):
                q = build_query(qid, name, qtype)
                s.send(q)
                rec.add("egress", q, None)
                data = s.recv(4096)
                rec.add("ingress", data, None)
        rec.save(out / "udp_connected.json", f"python connected send/recv -> dnsmasq {port}")
        # TCP: two queries on one connection, each with its 2-byte length prefix.
        rec = Recording()
        with socket.create_connection(addr, timeout=2) as s:
            for qid, name, qtype in ((0x0D01, "svc.test", 1), (0x0D02, "nope.test", 28)):
                q = build_query(qid, name, qtype)
                framed = struct.pack("!H", len(q)) + q
                s.sendall(framed)
                rec.add("egress", framed, None)
                head = _recv_exact(s, 2)
                body = _recv_exact(s, struct.unpack("!H", head)[0])
                rec.add("ingress", head + body, None)
        rec.save(out / "tcp.json", f"python TCP -> dnsmasq {port}")
    finally:
        server.stop()


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


if __name__ == "__main__":
    record(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/dns"), free_port())
