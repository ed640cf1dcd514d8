"""sock_diag dumps of TCP listeners, as this machine's kernel (6.12) answered them.

Recorded with listeners on 127.0.0.1:18432, [::1]:18431 and [::ffff:127.0.0.1]:18433 (a
dual-stack socket), an ESTABLISHED connection to the first (not listed: the kernel filters by
state) and the machine's own 0.0.0.0:2024. Each message carries netlink attributes after the
72-byte inet_diag_msg (their lengths differ per family): the parser steps by the message length.
"""

from __future__ import annotations

import socket
import struct

import pytest

from hostagent.identity import sock_diag

IPV4_MSGS = bytes.fromhex(
    "7c0000001400020001000000227d0000020a000007e800000000000000000000000000000000000000000000000000000000"
    "00000000000000000000010000000000000000000000000000008000000000000000e2040000050008000000000008000f00"
    "000000000c001500010000000000000006001600520000007c0000001400020001000000227d0000020a0000480000007f00"
    "000100000000000000000000000000000000000000000000000000000000000000004100000000000000000000000000000080"
    "000000000000000550e400050008000000000008000f00000000000c00150001000000000000000600160052000000"
)
DONE = bytes.fromhex("140000000300020001000000227d000000000000")
IPV6_MSGS = bytes.fromhex(
    "840000001400020001000000227d00000a0a00004801000000000000000000000000ffff7f000001000000000000000000000000"
    "00000000000000004200000000000000000000000000000080000000000000000650e400050008000000000005000b00000000"
    "0008000f00000000000c00150001000000000000000600160012000000840000001400020001000000227d00000a0a000047ff"
    "00000000000000000000000000000000000100000000000000000000000000000000000000004300000000000000000000000000"
    "000080000000000000000450e400050008000000000005000b000100000008000f00000000000c001500010000000000000006"
    "00160012000000"
)


@pytest.mark.parametrize(
    ("data", "done", "expected"),
    [
        (IPV4_MSGS, False, {1250: ("0.0.0.0", 2024), 14962693: ("127.0.0.1", 18432)}),
        # an IPv4-mapped listener is given in its IPv4 form, as events give such peers
        (IPV6_MSGS, False, {14962694: ("127.0.0.1", 18433), 14962692: ("::1", 18431)}),
        (DONE, True, {}),
        (IPV4_MSGS + DONE, True, {1250: ("0.0.0.0", 2024), 14962693: ("127.0.0.1", 18432)}),
        (b"", False, {}),
    ],
)
def test_parse_dump(data: bytes, done: bool, expected: dict[int, tuple[str, int]]) -> None:
    out: dict[int, tuple[str, int]] = {}
    assert sock_diag.parse_dump(data, out) is done
    assert out == expected


def test_an_error_message_raises_its_errno() -> None:
    error = struct.pack("=IHHIIi", 36, sock_diag.NLMSG_ERROR, 0, 1, 0, -95) + b"\0" * 16  # EOPNOTSUPP
    with pytest.raises(OSError) as err:
        sock_diag.parse_dump(error, {})
    assert err.value.errno == 95


def test_a_truncated_message_is_refused() -> None:
    with pytest.raises(ValueError, match="netlink message of 124 bytes"):
        sock_diag.parse_dump(IPV4_MSGS[:100], {})


def test_the_request_asks_for_tcp_listeners_of_one_family() -> None:
    req = sock_diag.request(socket.AF_INET6, seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, kind, flags, seq) == (len(req), 20, 0x301, 7) and len(req) == 16 + 56
    assert struct.unpack_from("=BBBxI", req, 16) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 1 << 10)
