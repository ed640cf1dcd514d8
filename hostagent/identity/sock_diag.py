"""TCP sockets in LISTEN state from the kernel's sock_diag netlink interface (what ``ss -lt`` uses).

The kernel filters by state, so a dump costs what the listeners cost, however many connections the
host has; /proc/net/tcp prints every socket, TIME_WAIT included (15k of them after a few seconds of
a load generator here: 37 ms of CPU per read of tcp + tcp6). ``parse_dump`` is a pure function over
the bytes the kernel answers; ``listening_sockets`` asks (the caller's network namespace).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10

_NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
# struct inet_diag_req_v2: family, protocol, ext, pad, states; then a zeroed inet_diag_sockid (48)
_REQ = struct.Struct("=BBBxI48x")
# struct inet_diag_msg: family, state, timer, retrans; sockid: sport, dport (big endian), src[16],
# dst[16], if, cookie[2]; then expires, rqueue, wqueue, uid, inode
_MSG_SIZE = 72
_SRC_AT, _INODE_AT = 8, 68


def request(family: int, seq: int = 1) -> bytes:
    """A dump request for the TCP listeners of one address family."""
    body = _REQ.pack(family, socket.IPPROTO_TCP, 0, 1 << TCP_LISTEN)
    return _NLMSG.pack(_NLMSG.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _address(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    address = ipaddress.IPv6Address(raw[:16])
    return str(address.ipv4_mapped) if address.ipv4_mapped else str(address)


def parse_dump(data: bytes, out: dict[int, tuple[str, int]]) -> bool:
    """Add inode -> (address, port) of the LISTEN sockets in one netlink read to ``out``; True
    once the dump is complete (NLMSG_DONE). An NLMSG_ERROR raises OSError with its errno."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size or off + length > len(data):
            raise ValueError(f"netlink message of {length} bytes at offset {off} in {len(data)}")
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", data, off + _NLMSG.size)[0]
            raise OSError(errno, f"sock_diag: {errno}")
        if kind == SOCK_DIAG_BY_FAMILY and length - _NLMSG.size >= _MSG_SIZE:
            at = off + _NLMSG.size
            family, state = data[at], data[at + 1]
            if state == TCP_LISTEN and family in (socket.AF_INET, socket.AF_INET6):
                port = struct.unpack_from(">H", data, at + 4)[0]
                inode = struct.unpack_from("=I", data, at + _INODE_AT)[0]
                out[inode] = (_address(family, data[at + _SRC_AT : at + _SRC_AT + 16]), port)
        off += (length + 3) & ~3
    return False


def listening_sockets(timeout_s: float = 2.0) -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every TCP listener (IPv4 and IPv6) in this network namespace.
    Raises OSError when netlink sock_diag is not available (the caller reads /proc/net instead)."""
    out: dict[int, tuple[str, int]] = {}
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(timeout_s)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=1):
            sock.send(request(family, seq))
            while not parse_dump(sock.recv(1 << 16), out):
                pass
    return out
