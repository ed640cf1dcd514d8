"""DNS (RFC 1035) over UDP and TCP: queries paired with their responses -> one Call per query.

https://www.rfc-editor.org/rfc/rfc1035#section-4.1

    header (12 bytes): ID(16) | QR(1) OPCODE(4) AA TC RD RA Z(3) RCODE(4) | QDCOUNT ANCOUNT NSCOUNT ARCOUNT
    question: QNAME (labels, or a 0b11 pointer) | QTYPE(16) | QCLASS(16)
    answer RR: NAME | TYPE(16) | CLASS(16) | TTL(32) | RDLENGTH(16) | RDATA

UDP: one Segment is one datagram (sendto/recvfrom/sendmsg/sendmmsg name the peer in
Segment.peer_addr/peer_port; connected sockets using write/read leave them empty). TCP: each
message has a 2-byte length prefix (RFC 1035 section 4.2.2). The capture stage makes the parser
for the socket's type (``SPEC.new_parser_for``); ``DnsParser(transport="auto")`` decides from the
first Segment instead: a length prefix that matches the bytes that follow means TCP.

Pairing: by (id, question name case-folded, qtype), so glibc's A + AAAA pair sent in one
sendmmsg (two datagrams, two Segments) gives two Calls even when both share an id; the
question name is case-folded because resolvers may randomise its case (0x20 encoding). A query
re-sent before its answer is counted ("retransmits"), not doubled. A query unanswered after
``timeout_ns`` (judged by later Segments' timestamps; glibc's default is 5 s) or at close ends as
error "timeout". The side that sent the query is the CLIENT.

Attributes (semantic conventions v1.44 define only ``dns.question.name`` and ``dns.answers`` for
DNS, both used; the rest are hostagent.* names): ``dns.question.name`` (labels joined by ".", no
trailing dot, bytes outside printable ASCII as \\DDD), ``dns.answers`` (A/AAAA addresses in the
captured answer section), ``hostagent.dns.question.type`` ("A", "AAAA", or "TYPE<n>"),
``hostagent.dns.response_code`` ("NOERROR", "NXDOMAIN"...), ``hostagent.dns.answer_count``
(ANCOUNT), ``hostagent.dns.truncated`` (TC bit, when set), ``network.peer.address`` /
``network.peer.port`` when the query's syscall named the peer (unconnected UDP sockets have no
connected peer for the capture stage to report). Span name: ``DNS {qtype}``. Errors: any RCODE but
NOERROR gives error.type = its name (the wire's answer, more precise than getaddrinfo's codes,
which v1.44's dns.lookup.duration suggests for libraries); NOERROR with no answers is not an error.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Optional

from hostagent.model import Attributes, Call, Direction, Role, Segment
from hostagent.protocols.base import ParserStats, ProtocolSpec

QTYPES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA", 33: "SRV",
    35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 64: "SVCB",
    65: "HTTPS", 252: "AXFR", 255: "ANY", 257: "CAA",
}  # fmt: skip
RCODES = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",
)  # fmt: skip
_HEADER = 12
_MAX_POINTERS = 16  # compression pointers followed per name: bounds work on hostile input
_MAX_NAME = 255  # RFC 1035 section 2.3.4


def qtype_name(qtype: int) -> str:
    return QTYPES.get(qtype) or f"TYPE{qtype}"


def rcode_name(rcode: int) -> str:
    return RCODES[rcode] if rcode < len(RCODES) else f"RCODE{rcode}"


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    is_response: bool
    opcode: int
    rcode: int
    truncated: bool  # TC bit
    qname: str
    qtype: int
    ancount: int
    answers: tuple[str, ...]  # A/AAAA addresses decoded from the captured bytes


_PLAIN_LABEL = re.compile(rb"[\x21-\x2d\x2f-\x5b\x5d-\x7e]*")  # printable, no "." or "\\"


def _label_text(raw: bytes) -> str:
    if _PLAIN_LABEL.fullmatch(raw):
        return raw.decode("ascii")
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C) else f"\\{b:03d}" for b in raw)


def read_name(buf: bytes, pos: int) -> tuple[str, int]:
    """(name, offset after it in the original place). Raises ValueError on a bad or looping name."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    while True:
        if pos >= len(buf):
            raise ValueError("name runs past the message")
        n = buf[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(buf):
                raise ValueError("truncated pointer")
            target = ((n & 0x3F) << 8) | buf[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > _MAX_POINTERS or target >= pos:  # pointers only go backwards: no loops
                raise ValueError("bad compression pointer")
            pos = target
            continue
        if n & 0xC0:
            raise ValueError("reserved label type")
        pos += 1
        if n == 0:
            break
        label = buf[pos : pos + n]
        if len(label) != n:
            raise ValueError("truncated label")
        total += n + 1
        if total > _MAX_NAME:
            raise ValueError("name too long")
        labels.append(_label_text(label))
        pos += n
    return (".".join(labels) if labels else "."), (end if end >= 0 else pos)


def _answers(buf: bytes, pos: int, count: int) -> tuple[str, ...]:
    out: list[str] = []
    for _ in range(min(count, 64)):
        try:
            _, pos = read_name(buf, pos)
        except ValueError:
            break
        if pos + 10 > len(buf):
            break
        rtype = int.from_bytes(buf[pos : pos + 2], "big")
        rdlen = int.from_bytes(buf[pos + 8 : pos + 10], "big")
        rdata = buf[pos + 10 : pos + 10 + rdlen]
        if len(rdata) != rdlen:
            break  # the tail was not captured
        if rtype == 1 and rdlen == 4:
            out.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlen == 16:
            out.append(socket.inet_ntop(socket.AF_INET6, rdata))
        pos += 10 + rdlen
    return tuple(out)


def parse_message(buf: bytes) -> Optional[Message]:
    """The header, first question and answers of a DNS message; None unless it is plausibly one
    (standard header, exactly one question, a question name that parses)."""
    if len(buf) < _HEADER + 5:
        return None
    flags = int.from_bytes(buf[2:4], "big")
    qdcount = int.from_bytes(buf[4:6], "big")
    ancount = int.from_bytes(buf[6:8], "big")
    opcode = (flags >> 11) & 0xF
    if qdcount != 1 or opcode > 6 or flags & 0x40:  # Z bit must be zero
        return None
    try:
        qname, pos = read_name(buf, _HEADER)
    except ValueError:
        return None
    if pos + 4 > len(buf):
        return None
    qtype = int.from_bytes(buf[pos : pos + 2], "big")
    is_response = bool(flags & 0x8000)
    return Message(
        id=int.from_bytes(buf[0:2], "big"),
        is_response=is_response,
        opcode=opcode,
        rcode=flags & 0xF,
        truncated=bool(flags & 0x200),
        qname=qname,
        qtype=qtype,
        ancount=ancount,
        answers=_answers(buf, pos + 4, ancount) if is_response else (),
    )


def _plausible(buf: bytes) -> bool:
    msg = parse_message(buf)
    if msg is None:
        return False
    if msg.is_response:
        return True
    # A query carries no answers and at most one additional record (EDNS OPT).
    return msg.ancount == 0 and buf[8:10] == b"\x00\x00" and int.from_bytes(buf[10:12], "big") <= 1


def _tcp_framed(data: bytes, size: int) -> bool:
    if size == 2 and len(data) == 2:
        return True  # the length prefix written on its own
    return len(data) >= 2 and int.from_bytes(data[:2], "big") == size - 2 and _plausible(data[2:])


def looks_like(data: bytes, direction: Direction) -> bool:
    """A DNS message with one question (UDP), or one behind a matching 2-byte length (TCP)."""
    return _plausible(data) or (len(data) > 2 and int.from_bytes(data[:2], "big") >= 17 and _plausible(data[2:]))


@dataclass(slots=True)
class _Pending:
    query: Message
    direction: Direction
    ts_ns: int
    size: int
    peer_addr: str
    peer_port: int


class _TcpReader:
    """Splits one direction of a TCP stream into messages (captured prefix, real length)."""

    __slots__ = ("_buf", "_skip")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0

    def feed(self, data: bytes, size: int) -> list[tuple[bytes, int]]:
        out: list[tuple[bytes, int]] = []
        missing = max(size - len(data), 0)
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
            n = min(self._skip, missing)
            self._skip -= n
            missing -= n
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            length = int.from_bytes(buf[pos : pos + 2], "big")
            if len(buf) - pos - 2 < length:
                break
            out.append((bytes(buf[pos + 2 : pos + 2 + length]), length))
            pos += 2 + length
        del buf[:pos]
        if missing:
            if len(buf) >= 2:  # a message whose tail was lost: its head is enough
                length = int.from_bytes(buf[:2], "big")
                out.append((bytes(buf[2:]), length))
                self._skip = max(length + 2 - len(buf) - missing, 0)
            buf.clear()  # anything past a lost boundary is unknowable; later Segments resync
        return out


class DnsParser:
    """Per-socket DNS decoder (StreamParser)."""

    def __init__(self, transport: str = "auto", timeout_ns: int = 5_000_000_000, max_pending: int = 256) -> None:
        self.stats = ParserStats()
        self.transport = transport  # "udp" | "tcp" | "auto" (decided at the first Segment)
        self._timeout_ns = timeout_ns
        self._max_pending = max_pending
        self._pending: dict[tuple[int, str, int], _Pending] = {}
        self._tcp = {Direction.EGRESS: _TcpReader(), Direction.INGRESS: _TcpReader()}

    def feed(self, segment: Segment) -> list[Call]:
        out = self._expire(segment.ts_ns - self._timeout_ns)
        size = max(segment.size, len(segment.data))
        if self.transport == "auto":
            self.transport = "tcp" if _tcp_framed(segment.data, size) else "udp"
        if self.transport == "tcp":
            messages = self._tcp[segment.direction].feed(segment.data, size)
        else:
            messages = [(segment.data, size)]
        for raw, length in messages:
            msg = parse_message(raw)
            if msg is None:
                self.stats.resyncs += 1
                continue
            if length > len(raw):
                self.stats.truncated += 1
            call = self._message(msg, segment, length)
            if call is not None:
                out.append(call)
        return out

    def close(self, ts_ns: int) -> list[Call]:
        return self._expire(None, ts_ns)

    def _message(self, msg: Message, seg: Segment, size: int) -> Optional[Call]:
        key = (msg.id, msg.qname.lower(), msg.qtype)
        if not msg.is_response:
            if key in self._pending:
                self._count("retransmits")
                return None
            if len(self._pending) >= self._max_pending:
                self._pending.pop(next(iter(self._pending)))
                self.stats.unpaired += 1
            self._pending[key] = _Pending(msg, seg.direction, seg.ts_ns, size, seg.peer_addr, seg.peer_port)
            return None
        pending = self._pending.pop(key, None)
        if pending is None:
            self.stats.unpaired += 1
            return None
        return _call(pending, msg, seg.ts_ns, size)

    def _expire(self, before_ns: Optional[int], close_ns: int = 0) -> list[Call]:
        """Unanswered queries sent before ``before_ns`` (all of them at close) end as timeouts: at
        the timeout's deadline, or at the close when that came first."""
        out: list[Call] = []
        for key, p in list(self._pending.items()):
            if before_ns is not None and p.ts_ns >= before_ns:
                break  # insertion order is time order
            del self._pending[key]
            deadline = p.ts_ns + self._timeout_ns
            end = deadline if before_ns is not None else min(max(close_ns, p.ts_ns), deadline)
            out.append(_call(p, None, end, 0))
        return out

    def _count(self, key: str) -> None:
        self.stats.extra[key] = self.stats.extra.get(key, 0) + 1


def _call(p: _Pending, response: Optional[Message], end_ns: int, response_size: int) -> Call:
    q = p.query
    qtype = qtype_name(q.qtype)
    attrs: Attributes = {"dns.question.name": q.qname, "hostagent.dns.question.type": qtype}
    if p.peer_addr:
        attrs["network.peer.address"] = p.peer_addr
        attrs["network.peer.port"] = p.peer_port
    error_type: Optional[str] = None
    message = ""
    if response is None:
        error_type, message = "timeout", "no response"
    else:
        rcode = rcode_name(response.rcode)
        attrs["hostagent.dns.response_code"] = rcode
        attrs["hostagent.dns.answer_count"] = response.ancount
        if response.answers:
            attrs["dns.answers"] = response.answers
        if response.truncated:
            attrs["hostagent.dns.truncated"] = True
        if response.rcode:
            error_type = message = rcode
    # Positional, in Call's field order: keywords cost ~0.6 us more per Call (model.Call)
    return Call(
        "dns",  # protocol
        Role.CLIENT if p.direction == Direction.EGRESS else Role.SERVER,  # role
        p.ts_ns,  # start_ns
        end_ns,
        f"DNS {qtype}",  # name
        attrs,  # attributes
        error_type,
        message,  # status_message
        None, None, (), (), b"", b"",  # traceparent, tracestate, headers and bodies: none
        p.size,  # request_size
        response_size,
    )


SPEC = ProtocolSpec(
    name="dns",
    probe="dns",
    looks_like=looks_like,
    new_parser=DnsParser,
    transports=("udp", "tcp"),
    # the socket's type, not a guess from the first bytes: a server reading the length prefix a
    # byte at a time (dnsmasq) or two queries in one write made TCP look like UDP
    new_parser_for=lambda transport: DnsParser(transport if transport in ("tcp", "udp") else "auto"),
)
