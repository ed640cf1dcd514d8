"""Offsets of the few struct sock fields bpf/capture.c's adopt() reads, from the kernel's own BTF.

adopt() (a socket received from another process, bpf/capture.c) reads the head of struct
sock_common, laid out the same since Linux 2.6. What lies further depends on the kernel's build
(config, version): a true IPv6 end's address (sock_common's skc_v6_daddr / skc_v6_rcv_saddr) and
the socket's type and protocol (struct sock's sk_type / sk_protocol, u16 since Linux 5.6), and the
way from the current task to the socket an fd names (task_struct.files ... socket.sk: a data call
that raced close() must not adopt). The running kernel describes its own structs in
/sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); the loader passes what is found here as -D
defines, and leaves out whatever is not found (the programs then do without it, as before).

Fast (READY waits for it; ~8 ms here for the sock fields, ~27 ms with the fd table's five structs):
the file is mapped (Linux >= 6.16; read otherwise, ~15-70 ms here), each
wanted name is found in the string section, and each struct's record by its name's offset in the
type section (bytes.find), not by walking the ~126k types (~0.26 s in Python). A found record is
checked (kind, size, every member within the section); more than one valid record for a name is
taken as not found. Member sizes are resolved by walking the types up to the highest id needed
(base types come first: a few thousand records at most).

Format: https://docs.kernel.org/bpf/btf.html ("Type encoding", "BTF kind").
"""

from __future__ import annotations

import logging
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

log = logging.getLogger(__name__)

VMLINUX = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_U32 = struct.Struct("<I")
_REC = struct.Struct("<III")  # a type's head (name_off, info, size/type), or a member (name, type, offset)

# BTF kinds (include/uapi/linux/btf.h)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
_QUALIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)
_SIZED = (_INT, _STRUCT, _UNION, _ENUM, _FLOAT, _ENUM64)

Buffer = Union[bytes, mmap.mmap]


@dataclass(frozen=True)
class SockOffsets:
    """Byte offsets from the start of struct sock (struct sock_common is its first member)."""

    v6_daddr: Optional[int] = None  # skc_v6_daddr, struct in6_addr (16 bytes)
    v6_rcv_saddr: Optional[int] = None  # skc_v6_rcv_saddr
    sk_type: Optional[int] = None  # u16
    sk_protocol: Optional[int] = None  # u16
    # the way from the current task to the socket its fd names (each a pointer but max_fds):
    # task_struct.files -> files_struct.fdt -> fdtable.max_fds (u32), .fd[] -> file.private_data
    # (struct socket) -> socket.sk
    fd_path: Optional[tuple[int, int, int, int, int, int]] = None

    def cflags(self) -> list[str]:
        """-D defines for bpf/capture.c: an address pair or a type/protocol pair, each whole."""
        out = []
        if self.v6_daddr is not None and self.v6_rcv_saddr is not None:
            out += [f"-DSKC_V6_DADDR_OFF={self.v6_daddr}", f"-DSKC_V6_RCV_SADDR_OFF={self.v6_rcv_saddr}"]
        if self.sk_type is not None and self.sk_protocol is not None:
            out += [f"-DSK_TYPE_OFF={self.sk_type}", f"-DSK_PROTOCOL_OFF={self.sk_protocol}"]
        if self.fd_path is not None:
            names = ("TASK_FILES_OFF", "FILES_FDT_OFF", "FDT_MAX_FDS_OFF", "FDT_FD_OFF", "FILE_PRIVATE_OFF",
                     "SOCKET_SK_OFF")
            out += [f"-D{n}={v}" for n, v in zip(names, self.fd_path)]
        return out


class _Btf:
    def __init__(self, buf: Buffer) -> None:
        if len(buf) < _HDR.size:
            raise ValueError("shorter than a BTF header")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(buf, 0)
        if magic != _MAGIC:
            raise ValueError(f"not little-endian BTF (magic {magic:#x})")
        self.buf = buf
        self.ts = hdr_len + type_off
        self.te = self.ts + type_len
        self.ss = hdr_len + str_off
        self.se = self.ss + str_len
        if self.te > len(buf) or self.se > len(buf) or type_len % 4:
            raise ValueError("sections out of bounds")
        self._starts: list[int] = [-1]  # type id -> its record's position (id 0 is void)
        self._walked = self.ts

    def name_off(self, name: str) -> Optional[int]:
        """The offset of ``name`` in the string section (strings are deduplicated: one at most)."""
        at = self.buf.find(b"\0" + name.encode() + b"\0", self.ss, self.se)
        return None if at < 0 else at + 1 - self.ss

    def struct_members(self, name: str, wanted: tuple[str, ...]) -> Optional[dict[str, tuple[int, int, int]]]:
        """The one struct ``name``'s members among ``wanted``: name -> (bit offset, bitfield size
        (0: not a bitfield), type id). None if the name or the struct is not found, or found twice."""
        off = self.name_off(name)
        wanted_offs = {self.name_off(w): w for w in wanted}
        if off is None:
            return None
        pattern = _U32.pack(off)
        found: Optional[dict[str, tuple[int, int, int]]] = None
        at = self.buf.find(pattern, self.ts, self.te)
        while at >= 0:
            members = self._members_at(at, wanted_offs) if (at - self.ts) % 4 == 0 else None
            if members is not None:
                if found is not None:
                    return None  # two records named so: not the one struct this is about
                found = members
            at = self.buf.find(pattern, at + 4, self.te)
        return found

    def _members_at(self, at: int, wanted_offs: dict[Optional[int], str]) -> Optional[dict[str, tuple[int, int, int]]]:
        if at + _REC.size > self.te:
            return None
        _name, info, _size = _REC.unpack_from(self.buf, at)
        vlen = info & 0xFFFF
        if (info >> 24) & 0x1F != _STRUCT or info & 0x60FF0000 or vlen == 0:  # unused bits set: not a head
            return None
        end = at + _REC.size * (1 + vlen)
        if end > self.te:
            return None
        kind_flag = info >> 31
        out = {}
        for p in range(at + _REC.size, end, _REC.size):
            m_name, m_type, m_off = _REC.unpack_from(self.buf, p)
            if m_name >= self.se - self.ss:
                return None
            w = wanted_offs.get(m_name)
            if w is not None:
                out[w] = (m_off & 0xFFFFFF, m_off >> 24, m_type) if kind_flag else (m_off, 0, m_type)
        return out

    def _start(self, type_id: int) -> int:
        """The position of type ``type_id``'s record, walking the section as far as needed."""
        starts, buf, p = self._starts, self.buf, self._walked
        while len(starts) <= type_id:
            if p + _REC.size > self.te:
                raise ValueError(f"no type {type_id}")
            starts.append(p)
            _name, info, _size = _REC.unpack_from(buf, p)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            p += _REC.size
            if kind in (_INT, _VAR, _DECL_TAG):
                p += 4
            elif kind == _ARRAY:
                p += 12
            elif kind in (_STRUCT, _UNION, _DATASEC, _ENUM64):
                p += 12 * vlen
            elif kind in (_ENUM, _FUNC_PROTO):
                p += 8 * vlen
            elif kind not in (_PTR, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _FUNC, _FLOAT, _TYPE_TAG):
                raise ValueError(f"unknown BTF kind {kind}")
        self._walked = p
        return starts[type_id]

    def size_of(self, type_id: int) -> Optional[int]:
        """A type's size in bytes through typedefs and qualifiers; None for what has none."""
        for _ in range(16):
            if type_id == 0:
                return None
            _name, info, size_or_type = _REC.unpack_from(self.buf, self._start(type_id))
            kind = (info >> 24) & 0x1F
            if kind in _SIZED:
                return int(size_or_type)
            if kind == _ARRAY:
                _elem, _index, nelems = _REC.unpack_from(self.buf, self._start(type_id) + _REC.size)
                elem = self.size_of(_elem)
                return None if elem is None else elem * nelems
            if kind not in _QUALIFIERS:
                return None
            type_id = size_or_type
        return None


def _field(btf: _Btf, members: Optional[dict[str, tuple[int, int, int]]], name: str, size: int) -> Optional[int]:
    """A whole-byte member of ``size`` bytes: its byte offset; None otherwise (missing, a bitfield
    as sk_type was before Linux 5.6, another size)."""
    if not members or name not in members:
        return None
    bits, bitfield, type_id = members[name]
    if bitfield or bits % 8 or btf.size_of(type_id) != size:
        return None
    return bits // 8


def sock_offsets_from(buf: Buffer) -> SockOffsets:
    """SockOffsets from BTF bytes (raises ValueError on what is not BTF)."""
    btf = _Btf(buf)
    common = btf.struct_members("sock_common", ("skc_family", "skc_v6_daddr", "skc_v6_rcv_saddr"))
    sock = btf.struct_members("sock", ("__sk_common", "sk_type", "sk_protocol"))
    # sanity: the head adopt() reads by its fixed layout, and sock_common first in struct sock
    if not common or common.get("skc_family", (0,))[0] != 128 or not sock or sock.get("__sk_common", (1,))[0] != 0:
        return SockOffsets()
    return SockOffsets(
        v6_daddr=_field(btf, common, "skc_v6_daddr", 16),
        v6_rcv_saddr=_field(btf, common, "skc_v6_rcv_saddr", 16),
        sk_type=_field(btf, sock, "sk_type", 2),
        sk_protocol=_field(btf, sock, "sk_protocol", 2),
        fd_path=_fd_path(btf),
    )


def _fd_path(btf: _Btf) -> Optional[tuple[int, int, int, int, int, int]]:
    """The fd table's offsets; None unless all are found. The pointers' sizes are not resolved
    (their types' ids are anywhere in the ~126k types: walking to them would cost ~0.1 s); these
    fields have been pointers for as long as they have had these names."""
    steps = (("task_struct", "files", None), ("files_struct", "fdt", None), ("fdtable", "max_fds", 4),
             ("fdtable", "fd", None), ("file", "private_data", None), ("socket", "sk", None))
    out = []
    for struct_name, member, size in steps:
        members = btf.struct_members(struct_name, (member,))
        if not members or member not in members:
            return None
        bits, bitfield, type_id = members[member]
        if bitfield or bits % 8 or (size is not None and btf.size_of(type_id) != size):
            return None
        out.append(bits // 8)
    return tuple(out)  # type: ignore[return-value]


def sock_offsets(path: Path = VMLINUX) -> SockOffsets:
    """The running kernel's SockOffsets; empty (each field None) when its BTF is missing or not
    understood, which the loader logs."""
    try:
        with open(path, "rb") as f:
            try:
                buf: Buffer = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                buf = f.read()  # vmlinux BTF is mappable since Linux 6.16
        try:
            return sock_offsets_from(buf)
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
    except (OSError, ValueError, struct.error) as e:
        log.info("kernel BTF (%s) not usable: %s", path, e)
        return SockOffsets()
