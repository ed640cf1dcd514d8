"""hostagent.kernel.btf: struct sock offsets from BTF, on this kernel's own /sys/kernel/btf/vmlinux
(checked against bpftool's dump of it) and on small BTF blobs written here in the same format
(the kernel's layouts before and after Linux 5.6, no IPv6, a name twice, what is not BTF)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from hostagent.kernel.btf import VMLINUX, SockOffsets, sock_offsets, sock_offsets_from

INT, ARRAY, STRUCT, TYPEDEF = 1, 3, 4, 8


class BtfWriter:
    """Types in BTF's encoding (https://docs.kernel.org/bpf/btf.html), ids from 1 in order."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.next_id = 1

    def s(self, name: str) -> int:
        if not name:
            return 0
        at = self.strings.find(b"\0" + name.encode() + b"\0")
        if at >= 0:
            return at + 1
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def _add(self, raw: bytes) -> int:
        self.types += raw
        self.next_id += 1
        return self.next_id - 1

    def int_(self, name: str, size: int) -> int:
        return self._add(struct.pack("<IIII", self.s(name), INT << 24, size, size * 8))

    def typedef(self, name: str, of: int) -> int:
        return self._add(struct.pack("<III", self.s(name), TYPEDEF << 24, of))

    def array(self, elem: int, index: int, n: int) -> int:
        return self._add(struct.pack("<IIIIII", 0, ARRAY << 24, 0, elem, index, n))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int, int]]) -> int:
        """members: (name, type id, bit offset, bitfield size); any bitfield sets kind_flag."""
        kind_flag = any(m[3] for m in members)
        raw = struct.pack("<III", self.s(name), (kind_flag << 31) | (STRUCT << 24) | len(members), size)
        for m_name, m_type, bits, bitfield in members:
            raw += struct.pack("<III", self.s(m_name), m_type, (bitfield << 24) | bits if kind_flag else bits)
        return self._add(raw)

    def blob(self) -> bytes:
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + bytes(self.types) + bytes(self.strings)


def kernel_like(*, ipv6: bool = True, sk_type_bitfield: bool = False, twice: bool = False) -> bytes:
    w = BtfWriter()
    u8 = w.int_("unsigned char", 1)
    u16 = w.typedef("u16", w.int_("short unsigned int", 2))
    u32 = w.int_("unsigned int", 4)
    in6 = w.struct("in6_addr", 16, [("in6_u", w.array(u8, u32, 16), 0, 0)])
    head = [("skc_daddr", u32, 0, 0), ("skc_rcv_saddr", u32, 32, 0), ("skc_family", u16, 128, 0),
            ("skc_state", u8, 144, 0)]
    v6 = [("skc_v6_daddr", in6, 448, 0), ("skc_v6_rcv_saddr", in6, 576, 0)] if ipv6 else []
    for _ in range(2 if twice else 1):
        common = w.struct("sock_common", 136, head + v6)
    if sk_type_bitfield:  # Linux < 5.6: unsigned int sk_padding:1, ..., sk_protocol:8, sk_type:16
        tail = [("sk_protocol", u32, 3336, 8), ("sk_type", u32, 3344, 16)]
    else:
        tail = [("sk_protocol", u16, 4256, 0), ("sk_type", u16, 4272, 0)]
    w.struct("sock", 784, [("__sk_common", common, 0, 0), *tail])
    return w.blob()


def test_the_layout_since_linux_5_6() -> None:  # no fd table structs in this blob: fd_path None
    assert sock_offsets_from(kernel_like()) == SockOffsets(v6_daddr=56, v6_rcv_saddr=72, sk_type=534,
                                                           sk_protocol=532)
    assert SockOffsets(56, 72, 534, 532).cflags() == [
        "-DSKC_V6_DADDR_OFF=56", "-DSKC_V6_RCV_SADDR_OFF=72", "-DSK_TYPE_OFF=534", "-DSK_PROTOCOL_OFF=532"]


def test_bitfields_before_5_6_are_left_out() -> None:
    found = sock_offsets_from(kernel_like(sk_type_bitfield=True))
    assert found == SockOffsets(v6_daddr=56, v6_rcv_saddr=72)
    assert found.cflags() == ["-DSKC_V6_DADDR_OFF=56", "-DSKC_V6_RCV_SADDR_OFF=72"]


def test_a_kernel_without_ipv6() -> None:
    assert sock_offsets_from(kernel_like(ipv6=False)) == SockOffsets(sk_type=534, sk_protocol=532)


def test_a_struct_named_twice_is_not_taken() -> None:
    assert sock_offsets_from(kernel_like(twice=True)) == SockOffsets()


def test_the_fd_table_path() -> None:
    assert SockOffsets(fd_path=(1824, 32, 0, 8, 24, 24)).cflags() == [
        "-DTASK_FILES_OFF=1824", "-DFILES_FDT_OFF=32", "-DFDT_MAX_FDS_OFF=0", "-DFDT_FD_OFF=8",
        "-DFILE_PRIVATE_OFF=24", "-DSOCKET_SK_OFF=24"]


def test_what_is_not_btf(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        sock_offsets_from(b"\x7fELF" + bytes(40))
    with pytest.raises(ValueError):
        sock_offsets_from(kernel_like()[:100])  # sections past the end
    bad = tmp_path / "vmlinux"
    bad.write_bytes(b"not btf at all, not even its header")
    assert sock_offsets(bad) == SockOffsets()
    assert sock_offsets(tmp_path / "missing") == SockOffsets()
    assert SockOffsets().cflags() == []


def _bpftool_offsets(struct_name: str) -> dict[str, int]:
    out = subprocess.run(["bpftool", "btf", "dump", "file", str(VMLINUX), "format", "raw"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    block = re.search(rf"^\[\d+\] STRUCT '{struct_name}' size=\d+ vlen=\d+\n((?:\t.*\n)+)", out, re.M)
    assert block, struct_name
    return {m[0]: int(m[1]) for m in re.findall(r"'(\w+)' type_id=\d+ bits_offset=(\d+)", block.group(1))}


@pytest.mark.skipif(not VMLINUX.is_file(), reason="no kernel BTF")
def test_this_kernels_btf_as_bpftool_reads_it() -> None:
    found = sock_offsets()
    assert found.v6_daddr is not None and found.sk_type is not None, found  # kernel 6.18 with IPv6 here
    if shutil.which("bpftool") is None:
        pytest.skip("no bpftool to compare with")
    common, sock = _bpftool_offsets("sock_common"), _bpftool_offsets("sock")
    fdt = _bpftool_offsets("fdtable")
    fd_path = (_bpftool_offsets("task_struct")["files"] // 8, _bpftool_offsets("files_struct")["fdt"] // 8,
               fdt["max_fds"] // 8, fdt["fd"] // 8, _bpftool_offsets("file")["private_data"] // 8,
               _bpftool_offsets("socket")["sk"] // 8)
    assert found == SockOffsets(v6_daddr=common["skc_v6_daddr"] // 8, v6_rcv_saddr=common["skc_v6_rcv_saddr"] // 8,
                                sk_type=sock["sk_type"] // 8, sk_protocol=sock["sk_protocol"] // 8, fd_path=fd_path)
