"""hostagent.memory: glibc's heap and arenas, and paging out clean library pages (real calls on
this process: glibc and Linux >= 5.4 are what the agent runs on)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from hostagent.memory import (
    _clean_file_ranges,
    limit_malloc_arenas,
    page_out_libraries,
    rss_kib,
    status_kib,
    trim_heap,
)

SMAPS = """\
7f0000000000-7f0000200000 r--p 00000000 fe:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               2048 kB
Rss:                1024 kB
Anonymous:             0 kB
7f0000200000-7f0000400000 r-xp 00200000 fe:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:               2048 kB
Anonymous:             0 kB
7f0000400000-7f0000410000 r--p 00400000 fe:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Size:                 64 kB
Anonymous:            64 kB
7f0000410000-7f0000420000 rw-p 00410000 fe:01 123 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Anonymous:             8 kB
7f0000420000-7f0000430000 rw-p 00000000 00:00 0
Anonymous:            64 kB
7f0000430000-7f0000440000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libclang-cpp.so.14
Anonymous:             0 kB
7f0000440000-7f0000450000 r-xp 00000000 fe:01 789 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000450000-7f0000460000 r--p 00000000 00:00 0 [vvar]
Anonymous:             0 kB
7f0000460000-7f0000470000 rw-s 00000000 fe:01 999 /usr/lib/x86_64-linux-gnu/libclang-shared-writable
Anonymous:             0 kB
"""


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        # rodata and text of libLLVM: clean; its relro (64 kB copied) and data (8 kB) are left alone
        (("libLLVM",), [(0x7F0000000000, 0x7F0000200000), (0x7F0000200000, 0x7F0000400000)]),
        (("libclang",), [(0x7F0000430000, 0x7F0000440000)]),
        (("libLLVM", "libclang"), [(0x7F0000000000, 0x7F0000200000), (0x7F0000200000, 0x7F0000400000),
                                   (0x7F0000430000, 0x7F0000440000)]),
        (("vvar",), []),  # not a file
        (("libclang-shared",), []),  # writable: it could be written between the look and the madvise
        (("libfoo",), []),
    ],
)
def test_only_clean_file_mappings_of_the_named_libraries(names: tuple[str, ...],
                                                         expected: list[tuple[int, int]]) -> None:
    assert _clean_file_ranges(SMAPS.splitlines(keepends=True), names) == expected


def test_glibc_calls_are_there() -> None:
    assert limit_malloc_arenas(8) is True  # 8: this test process keeps glibc's usual number
    assert trim_heap() in (True, False)  # 1 when memory was released, 0 when there was none
    assert rss_kib() > 0
    assert rss_kib("999999999") == 0


def test_status_kib_gives_the_kb_lines_and_nothing_for_a_gone_pid() -> None:
    status = status_kib()
    assert status["VmHWM"] >= status["VmRSS"] > 0  # peak RSS, RSS now
    assert "Pid" not in status and "Name" not in status  # lines without a kB value are left out
    assert status_kib("999999999") == {}


def test_page_out_drops_a_clean_file_mapping_and_keeps_a_written_one(tmp_path: Path) -> None:
    size = 16 << 20
    clean = tmp_path / "hostagent-pageout-clean.bin"
    written = tmp_path / "hostagent-pageout-written.bin"
    for p in (clean, written):
        p.write_bytes(os.urandom(4096) * (size // 4096))
    with open(clean, "rb") as f1, open(written, "r+b") as f2:
        ro = mmap.mmap(f1.fileno(), size, prot=mmap.PROT_READ)
        cow = mmap.mmap(f2.fileno(), size, access=mmap.ACCESS_COPY)
        try:
            ro_sum = sum(ro[i] for i in range(0, size, 4096))  # every page resident
            for i in range(0, size, 4096):
                cow[i] = (cow[i] + 1) % 256  # every page copied: private, not the file's any more
            cow_sum = sum(cow[i] for i in range(0, size, 4096))
            paged = page_out_libraries(("hostagent-pageout-",))
            assert paged >= (size >> 10) * 3 // 4, paged  # the clean 16 MiB went (most of it at least)
            assert sum(ro[i] for i in range(0, size, 4096)) == ro_sum  # read back from the file
            assert sum(cow[i] for i in range(0, size, 4096)) == cow_sum  # the written copy stayed
        finally:
            ro.close()
            cow.close()


def test_page_out_of_nothing_is_zero() -> None:
    assert page_out_libraries(("no-such-library-here",)) == 0
    assert page_out_libraries(smaps_path="/nonexistent/smaps") == 0


def test_freeze_start_up_objects_hides_them_from_the_collector_and_raises_gen0() -> None:
    import gc

    from hostagent.memory import GC_GEN0_THRESHOLD, freeze_start_up_objects

    threshold = gc.get_threshold()
    try:
        frozen = freeze_start_up_objects()
        assert frozen > 1000 and gc.get_freeze_count() == frozen  # this interpreter's modules at least
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, threshold[1], threshold[2])
        assert gc.get_count()[2] == 0  # the collection ran first
        cycle: list[object] = []
        cycle.append(cycle)  # a cycle made later is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
