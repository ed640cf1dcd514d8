"""Header choice over fixture trees shaped like Debian's and a plain distribution's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostagent.kernel import KernelNotReady, find_kernel_headers
from hostagent.kernel.headers import merge_split_tree, parse_version


def debian_pair(usr_src: Path, ver: str, flavour: str = "amd64") -> tuple[Path, Path]:
    """linux-headers-<ver>-common (sources) + linux-headers-<ver>-<flavour> (generated), as Debian ships."""
    common = usr_src / f"linux-headers-{ver}-common"
    arch = usr_src / f"linux-headers-{ver}-{flavour}"
    (common / "include" / "linux").mkdir(parents=True)
    (common / "include" / "linux" / "types.h").write_text("common types\n")
    (common / "Makefile").write_text("common makefile\n")
    (arch / "include" / "generated").mkdir(parents=True)
    (arch / "include" / "generated" / "autoconf.h").write_text("arch autoconf\n")
    (arch / "Makefile").write_text("arch makefile\n")  # overrides the common one in the merge
    return common, arch


def plain_tree(path: Path) -> Path:
    (path / "include" / "linux").mkdir(parents=True)
    (path / "Makefile").write_text("full\n")
    return path


def choose(tmp_path: Path, release: str, configured: str | None = None):  # type: ignore[no-untyped-def]
    return find_kernel_headers(
        configured,
        tmp_path / "run",
        release=release,
        modules_root=tmp_path / "lib" / "modules",
        usr_src=tmp_path / "usr" / "src",
        set_env=False,
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("6.1.0-56-amd64", (6, 1, 0, 56)),
        ("6.18.44-fc-v782", (6, 18, 44)),
        ("5.15.0", (5, 15, 0)),
        ("4.18", (4, 18)),
        ("garbage", ()),
    ],
)
def test_parse_version(text: str, want: tuple[int, ...]) -> None:
    assert parse_version(text) == want


def test_matching_build_dir_wins(tmp_path: Path) -> None:
    build = plain_tree(tmp_path / "lib" / "modules" / "6.18.44" / "build")
    debian_pair(tmp_path / "usr" / "src", "6.18.44-1")
    c = choose(tmp_path, "6.18.44")
    assert (c.path, c.source, c.exact) == (build, "matching", True)


def test_matching_debian_split_is_merged_without_touching_lib_modules(tmp_path: Path) -> None:
    common, arch = debian_pair(tmp_path / "usr" / "src", "6.1.0-56")
    mod = tmp_path / "lib" / "modules" / "6.1.0-56-amd64"
    mod.mkdir(parents=True)
    os.symlink(arch, mod / "build")
    os.symlink(common, mod / "source")
    before = sorted(p.name for p in mod.iterdir())
    c = choose(tmp_path, "6.1.0-56-amd64")
    assert (c.source, c.exact) == ("matching", True)
    assert c.path == tmp_path / "run" / "headers-6.1.0-56-amd64"
    assert (c.path / "include" / "linux" / "types.h").read_text() == "common types\n"
    assert (c.path / "include" / "generated" / "autoconf.h").read_text() == "arch autoconf\n"
    assert (c.path / "Makefile").read_text() == "arch makefile\n"
    assert sorted(p.name for p in mod.iterdir()) == before


def test_nearest_installed_version_is_chosen(tmp_path: Path) -> None:
    src = tmp_path / "usr" / "src"
    debian_pair(src, "5.10.0-30")
    debian_pair(src, "6.1.0-20")
    debian_pair(src, "6.1.0-56")
    c = choose(tmp_path, "6.18.44-fc-v782")
    assert (c.source, c.version, c.exact) == ("nearest", "6.1.0-56-amd64", False)
    assert (c.path / "include" / "generated" / "autoconf.h").is_symlink()
    assert os.readlink(c.path / "include" / "generated" / "autoconf.h") == str(
        src / "linux-headers-6.1.0-56-amd64" / "include" / "generated" / "autoconf.h"
    )


def test_nearest_prefers_same_major_minor(tmp_path: Path) -> None:
    src = tmp_path / "usr" / "src"
    plain_tree(src / "linux-headers-5.15.0")
    plain_tree(src / "linux-headers-6.8.0")
    plain_tree(src / "linux-headers-6.9.0")
    c = choose(tmp_path, "6.8.12")
    assert (c.path, c.version) == (src / "linux-headers-6.8.0", "6.8.0")


def test_common_without_arch_half_is_not_a_candidate(tmp_path: Path) -> None:
    (tmp_path / "usr" / "src" / "linux-headers-6.1.0-56-common" / "include").mkdir(parents=True)
    with pytest.raises(KernelNotReady):
        choose(tmp_path, "6.18.44")


def test_configured_path_is_the_last_resort(tmp_path: Path) -> None:
    mine = plain_tree(tmp_path / "my-headers")
    c = choose(tmp_path, "6.18.44", configured=str(mine))
    assert (c.path, c.source) == (mine, "configured")


def test_no_headers_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(KernelNotReady) as exc:
        choose(tmp_path, "6.18.44")
    msg = str(exc.value)
    assert msg.startswith("No kernel headers found") and msg.count(". ") == 0 and msg.endswith(".")


def test_configured_path_missing(tmp_path: Path) -> None:
    with pytest.raises(KernelNotReady, match="does not exist"):
        choose(tmp_path, "6.18.44", configured=str(tmp_path / "nope"))


def test_merged_tree_is_reused_and_rebuilt_when_sources_change(tmp_path: Path) -> None:
    src = tmp_path / "usr" / "src"
    common, arch = debian_pair(src, "6.1.0-56")
    dest = tmp_path / "run" / "m"
    merge_split_tree(common, arch, dest)
    marker = dest / "include" / "stale-file"
    marker.symlink_to(common / "Makefile")
    merge_split_tree(common, arch, dest)  # same sources: kept as is
    assert marker.is_symlink()
    common2, arch2 = debian_pair(src, "6.1.0-57")
    merge_split_tree(common2, arch2, dest)
    assert not marker.exists() and not marker.is_symlink()
    assert os.readlink(dest / "Makefile") == str(arch2 / "Makefile")
    assert (common / "Makefile").read_text() == "common makefile\n"  # sources untouched


def test_env_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)
    build = plain_tree(tmp_path / "lib" / "modules" / "6.18.44" / "build")
    find_kernel_headers(
        None,
        tmp_path / "run",
        release="6.18.44",
        modules_root=tmp_path / "lib" / "modules",
        usr_src=tmp_path / "usr" / "src",
    )
    assert os.environ["BCC_KERNEL_SOURCE"] == str(build)
