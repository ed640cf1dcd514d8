"""TCP sockets in LISTEN state from the text of /proc/net/tcp and tcp6 (a pure parser).

Where sock_diag netlink is not available, or under a test root (``ProcFS.net_file``), the listener
table reads these. They print every socket, TIME_WAIT ones included, so sock_diag is preferred on
a live system (see ``sock_diag``).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

_LISTEN = "0A"


def _decode_addr(hex_addr: str) -> str:
    """/proc/net/tcp prints addresses as 32-bit words in host byte order."""
    raw = bytes.fromhex(hex_addr)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    packed = struct.pack(f">{len(words)}I", *words)
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    address = ipaddress.IPv6Address(packed)
    return str(address.ipv4_mapped) if address.ipv4_mapped else str(address)


def decode_endpoint(text: str) -> tuple[str, int]:
    """``0100007F:10E1`` (a /proc/net/tcp address column) -> ("127.0.0.1", 4321); a v4-mapped
    IPv6 address as its IPv4 one. ValueError (or struct.error) on a malformed column."""
    addr_hex, _, port_hex = text.partition(":")
    return _decode_addr(addr_hex), int(port_hex, 16)


def parse_listening(text: str) -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of the LISTEN sockets in /proc/net/tcp or tcp6 text."""
    sockets: dict[int, tuple[str, int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        try:
            sockets[int(fields[9])] = decode_endpoint(fields[1])
        except (ValueError, struct.error):
            continue
    return sockets
