"""HPACK (RFC 7541) header-block decoding for one direction of an HTTP/2 connection.

https://www.rfc-editor.org/rfc/rfc7541

Normal path: the ``hpack`` package's ``Decoder`` (the reference Python implementation, already a
dependency) with one instance per direction, so its dynamic table follows the encoder's.

Degraded path, when the dynamic table is not known - the connection was first seen mid-way, a
HEADERS frame was lost, or ``hpack`` failed on a block (its table may then be half-updated):
``PartialDecoder``, a small decoder of our own that ``hpack`` cannot replace, because it tracks
which dynamic entries it *knows*. HPACK indexes the dynamic table newest-first, so the entries
inserted since we started watching are exactly indices 62..62+k-1 whatever came before; older
indices are unknown. Static-table references and literals always decode; a reference to an
unknown entry drops that one field (never a guessed value) and is counted. It reuses hpack's
static table, integer and Huffman decoders.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import hpack
from hpack.hpack import decode_integer
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

Header = tuple[str, str]

_STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(_STATIC)  # 61
_DEFAULT_TABLE_SIZE = 4096
_ENTRY_OVERHEAD = 32  # RFC 7541 section 4.1
# An observer cannot know every SETTINGS_HEADER_TABLE_SIZE the decoder side sent, so accept any
# size update an encoder makes (the peer would have rejected an illegal one).
_PERMISSIVE_TABLE_LIMIT = 1 << 24
_MAX_HEADER_LIST = 256 * 1024


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class PartialDecoder:
    """HPACK decoder whose dynamic table may be only partly known (see module docstring)."""

    __slots__ = ("_entries", "_maxsize", "_size")

    def __init__(self) -> None:
        # Newest first; ``None`` name/value marks an entry inserted with an unknown part.
        self._entries: deque[tuple[Optional[bytes], Optional[bytes], int]] = deque()
        self._maxsize = _DEFAULT_TABLE_SIZE  # assumed; size updates seen on the wire correct it
        self._size = 0

    def decode(self, block: bytes) -> tuple[list[Header], int]:
        """(headers that could be known, number of fields dropped as unknown). Raises on garbage."""
        out: list[Header] = []
        unknown = 0
        pos = 0
        end = len(block)
        mv = memoryview(block)
        while pos < end:
            b = block[pos]
            if b & 0x80:  # indexed field
                idx, used = decode_integer(mv[pos:], 7)
                pos += used
                entry_name, entry_value = self._lookup(idx)
                if entry_name is None or entry_value is None:
                    unknown += 1
                else:
                    out.append((_text(entry_name), _text(entry_value)))
                continue
            if b & 0xE0 == 0x20:  # dynamic table size update
                size, used = decode_integer(mv[pos:], 5)
                pos += used
                self._maxsize = size
                self._evict()
                continue
            indexing = bool(b & 0x40)
            prefix = 6 if indexing else 4
            idx, used = decode_integer(mv[pos:], prefix)
            pos += used
            name: Optional[bytes]
            if idx:
                name = self._lookup(idx)[0]
            else:
                name, pos = self._string(block, mv, pos)
            value, pos = self._string(block, mv, pos)
            if indexing:
                self._insert(name, value)
            if name is None:
                unknown += 1
            else:
                out.append((_text(name), _text(value)))
        return out, unknown

    @staticmethod
    def _string(block: bytes, mv: memoryview, pos: int) -> tuple[bytes, int]:
        if pos >= len(block):
            raise ValueError("truncated header block")
        huffman = block[pos] & 0x80
        length, used = decode_integer(mv[pos:], 7)
        start = pos + used
        raw = block[start : start + length]
        if len(raw) != length:
            raise ValueError("truncated header block")
        return (decode_huffman(raw) if huffman else raw), start + length

    def _lookup(self, idx: int) -> tuple[Optional[bytes], Optional[bytes]]:
        if idx == 0:
            raise ValueError("index 0")
        if idx <= _STATIC_LEN:
            return _STATIC[idx - 1]
        j = idx - _STATIC_LEN - 1
        if j < len(self._entries):
            name, value, _ = self._entries[j]
            return name, value
        return None, None  # inserted before we started watching

    def _insert(self, name: Optional[bytes], value: bytes) -> None:
        # An unknown name's length is unknown too: its size is a lower bound, which only affects
        # how long we remember entries, never which entry an index names.
        size = len(value) + (len(name) if name else 0) + _ENTRY_OVERHEAD
        self._entries.appendleft((name, value, size))
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._entries and self._size > self._maxsize:
            self._size -= self._entries.pop()[2]


class HeaderBlockDecoder:
    """One direction's HPACK state. ``decode`` never raises."""

    __slots__ = ("_full", "_partial", "errors")

    def __init__(self, table_known: bool = True) -> None:
        self._full: Optional[hpack.Decoder] = None
        self._partial: Optional[PartialDecoder] = None
        self.errors = 0
        if table_known:
            self._full = hpack.Decoder(max_header_list_size=_MAX_HEADER_LIST)
            self._full.max_allowed_table_size = _PERMISSIVE_TABLE_LIMIT
        else:
            self._partial = PartialDecoder()

    @property
    def table_known(self) -> bool:
        return self._full is not None

    def table_lost(self) -> None:
        """A header block of this direction went by unseen: from now on, decode partially."""
        self._full = None
        self._partial = PartialDecoder()

    def decode(self, block: bytes) -> tuple[list[Header], int]:
        """(headers, fields dropped as unknown). On a decoding error: what decoded is lost for
        this block, the table becomes unknown and ``errors`` counts it."""
        if self._full is not None:
            try:
                raw = self._full.decode(block, raw=True)
            except Exception:  # hpack is pure Python: any error (index, size, UTF-8) is the input's
                self.errors += 1
                self.table_lost()
                return [], 1
            return [(_text(n), _text(v)) for n, v in raw], 0  # type: ignore[arg-type]
        assert self._partial is not None
        try:
            return self._partial.decode(block)
        except Exception:
            self.errors += 1
            self._partial = PartialDecoder()
            return [], 1
