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
    assert os.readlink(c.path / "include" / "generated") == str(
        src / "linux-headers-6.1.0-56-amd64" / "include" / "generated"
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


def test_merged_tree_links_directories_only_one_side_has(tmp_path: Path) -> None:
    """Only directories both halves have are made (and merged entry by entry); the rest are one
    link each, so a start does not create (nor a stop remove) a link per header file."""
    src = tmp_path / "usr" / "src"
    common, arch = debian_pair(src, "6.1.0-56")
    for i in range(50):
        (common / "include" / "linux" / f"h{i}.h").write_text("x\n")
    (common / "include" / "uapi" / "linux").mkdir(parents=True)
    (common / "include" / "uapi" / "linux" / "bpf.h").write_text("uapi bpf\n")
    (common / "arch" / "x86" / "include" / "asm").mkdir(parents=True)
    (common / "arch" / "x86" / "include" / "asm" / "page.h").write_text("common page\n")
    (arch / "arch" / "x86" / "include" / "generated" / "asm").mkdir(parents=True)
    (arch / "arch" / "x86" / "include" / "generated" / "asm" / "rwonce.h").write_text("generated\n")
    (arch / "include" / "linux").mkdir()  # both have include/linux: merged, arch's file wins
    (arch / "include" / "linux" / "h7.h").write_text("arch h7\n")
    kbuild = src / "linux-kbuild-6.1" / "scripts"  # Debian: the arch half links scripts/ here
    kbuild.mkdir(parents=True)
    (kbuild / "gcc-version.sh").write_text("kbuild\n")
    (common / "scripts").mkdir()
    (common / "scripts" / "common-script").write_text("common\n")
    os.symlink(kbuild, arch / "scripts")
    dest = merge_split_tree(common, arch, tmp_path / "run" / "m")

    links = [p for p in dest.rglob("*") if p.is_symlink()]
    made = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_dir() and not p.is_symlink())
    assert made == ["arch", "arch/x86", "arch/x86/include", "include", "include/linux", "scripts"]
    assert os.readlink(dest / "include" / "uapi") == str(common / "include" / "uapi")
    x86 = Path("arch", "x86", "include", "generated")
    assert os.readlink(dest / x86) == str(arch / x86)
    assert (dest / "include" / "linux" / "h7.h").read_text() == "arch h7\n"
    assert (dest / "include" / "linux" / "h8.h").read_text() == "x\n"
    assert (dest / "include" / "uapi" / "linux" / "bpf.h").read_text() == "uapi bpf\n"
    assert (dest / "arch" / "x86" / "include" / "asm" / "page.h").read_text() == "common page\n"
    assert {p.name for p in (dest / "scripts").iterdir()} == {"gcc-version.sh", "common-script"}
    assert len(links) == 58  # include/linux: its 51 files; Makefile, 4 directories, 2 scripts
    assert (common / "include" / "linux" / "h7.h").read_text() == "x\n"  # sources untouched


def test_merged_tree_is_made_beside_and_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another agent starting on the same runtime directory sees the old tree or the new one,
    never one half made: the new one is made under another name and renamed."""
    from hostagent.kernel import headers

    src = tmp_path / "usr" / "src"
    common, arch = debian_pair(src, "6.1.0-56")
    dest = tmp_path / "run" / "m"
    merge_split_tree(common, arch, dest)
    common2, arch2 = debian_pair(src, "6.1.0-57")
    seen: list[str] = []
    real = headers._merge_dirs

    def watched(c: str, a: str, dst: str, depth: int) -> None:
        if depth == 0:
            seen.append(os.readlink(dest / "Makefile"))  # the old tree, whole, while the new is made
            assert dst != str(dest)
        real(c, a, dst, depth)

    monkeypatch.setattr(headers, "_merge_dirs", watched)
    merge_split_tree(common2, arch2, dest)
    assert seen == [str(arch / "Makefile")]
    assert os.readlink(dest / "Makefile") == str(arch2 / "Makefile")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m"]  # nothing left beside it
