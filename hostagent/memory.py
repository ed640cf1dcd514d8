"""Keep the daemon's resident memory down: glibc's malloc arenas and heap, and code run only once.

Measured (see the #7 report): right after start most of the RSS is not the pipeline's. bcc's
compile leaves tens of MiB of freed LLVM memory in the heap (glibc keeps it unless asked to give
it back), every thread that allocates gets a malloc arena of its own, and the pages of
libLLVM/libclang that ran the compile stay mapped although nothing runs them again.
Every function here is best effort: on a libc without the call (musl) or a kernel without the
madvise flag it does nothing and says so by its return value.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
from collections.abc import Iterable
from typing import Optional

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)
MADV_DONTNEED = 4  # drop our mapping of these pages (a clean file page is read again on use)
MADV_PAGEOUT = 21  # Linux 5.4: reclaim these pages now (a hint: contents never change)
# Libraries that only bcc's compile runs: their text is paged back in if it ever runs again.
COMPILER_LIBRARIES = ("libLLVM", "libclang")

_libc: Optional[ctypes.CDLL] = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def limit_malloc_arenas(count: int = 2) -> bool:
    """At most ``count`` glibc malloc arenas (default: 8 per core, each holding on to its own free
    memory). Only arenas made after the call obey it: call it before any thread starts."""
    fn = getattr(_c(), "mallopt", None)
    return bool(fn is not None and fn(M_ARENA_MAX, count) == 1)


def trim_heap() -> bool:
    """Give the free memory at the top of the heap and inside every arena back to the kernel."""
    fn = getattr(_c(), "malloc_trim", None)
    return bool(fn is not None and fn(0))


# Cyclic GC once the start is over. The pipeline allocates tens of objects per span (a Call, its
# attribute dicts, a ReadableSpan...), nearly all freed by reference counting, yet at the default
# gen0 threshold of 700 the collector runs every few dozen spans, and each older-generation pass
# walks again what the start left behind (~45k objects: bcc, gRPC, protobuf, the OpenTelemetry
# SDK). Replay A/B (fresh processes, alternated, 3 rounds): 24.0 -> 20.3 us per span.
GC_GEN0_THRESHOLD = 50_000


def freeze_start_up_objects() -> int:
    """Collect once, move every object alive now out of the collector's sight (gc.freeze: the
    modules and caches of the start are never garbage) and raise the gen0 threshold. Returns the
    number of objects frozen."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    return gc.get_freeze_count()


def status_kib(pid: str = "self") -> dict[str, int]:
    """The ``kB`` lines of /proc/<pid>/status (VmRSS, VmHWM, ...) in KiB; {} when it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                parts = value.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0])
    except OSError:
        pass
    return out


def rss_kib(pid: str = "self") -> int:
    return status_kib(pid).get("VmRSS", 0)


def _clean_file_ranges(smaps: Iterable[str], names: tuple[str, ...]) -> list[tuple[int, int]]:
    """(start, end) of the read-only mappings of files whose name contains one of ``names`` and
    that hold no private (copied-on-write) page: relocated data (RELRO: read-only, yet written by
    the dynamic loader) must never be handed back to the file, and a writable mapping could be
    written between this look and the madvise."""
    out: list[tuple[int, int]] = []
    current: Optional[tuple[int, int]] = None
    for line in smaps:
        head = line.split(maxsplit=6)
        if head and "-" in head[0] and not head[0].endswith(":"):
            current = None
            path = head[5].strip() if len(head) > 5 else ""
            writable = len(head) > 1 and "w" in head[1]
            if not writable and path.startswith("/") and any(n in path.rsplit("/", 1)[-1] for n in names):
                lo, hi = head[0].split("-")
                current = (int(lo, 16), int(hi, 16))
        elif current is not None and head and head[0] == "Anonymous:":
            if int(head[1]) == 0:
                out.append(current)
            current = None
    return out


def page_out_libraries(names: tuple[str, ...] = COMPILER_LIBRARIES, smaps_path: str = "/proc/self/smaps") -> int:
    """Hand back the resident pages of these libraries' clean read-only file mappings: reclaimed
    (MADV_PAGEOUT) where only this process maps them, else just unmapped from it (MADV_DONTNEED:
    another process using the same library keeps them in the page cache). Safe whatever runs
    later: a page is read from the file (or the page cache) again on use.
    Returns the KiB of RSS that went away (0 when nothing could be done)."""
    try:
        with open(smaps_path) as f:
            ranges = _clean_file_ranges(f, names)
    except OSError:
        return 0
    if not ranges:
        return 0
    madvise = _c().madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    before = rss_kib()
    for lo, hi in ranges:
        for advice in (MADV_PAGEOUT, MADV_DONTNEED):
            if madvise(lo, hi - lo, advice) != 0:
                log.debug("madvise(%d) refused: %s", advice, os.strerror(ctypes.get_errno()))
    return max(0, before - rss_kib())

