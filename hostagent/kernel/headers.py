"""Find kernel headers for bcc without touching /lib/modules.

bcc compiles our C at load time and needs a kernel header tree even though our programs never
read kernel structs by offset (so headers of a nearby version are safe). Order of preference:
1. /lib/modules/<release>/build of the running kernel (matching headers);
2. the installed /usr/src/linux-headers-<ver>-<flavour> nearest to the running version. Debian
   splits each version into <ver>-<flavour> (generated, arch) and <ver>-common (the sources);
   bcc needs both in one tree, so we build a merged symlink tree under our runtime directory;
3. the configured path.
The choice is exported as BCC_KERNEL_SOURCE, which bcc reads when it compiles.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hostagent.kernel.errors import KernelNotReady

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?(?:-(\d+))?")


@dataclass(frozen=True)
class HeadersChoice:
    path: Path  # the tree handed to bcc as BCC_KERNEL_SOURCE
    source: str  # "matching" | "nearest" | "configured"
    version: str  # version string of the chosen headers ("" when unknown)
    exact: bool  # headers are for the running kernel release


def parse_version(text: str) -> tuple[int, ...]:
    """'6.1.0-56-amd64' -> (6, 1, 0, 56); unparsable -> ()."""
    m = _VERSION.match(text)
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Sort key: nearer major.minor first, then the newer build of it."""
    a2 = (*a, 0, 0, 0, 0)[:4]
    b2 = (*b, 0, 0, 0, 0)[:4]
    return (abs(a2[0] - b2[0]), abs(a2[1] - b2[1]), -b2[2], -b2[3])


def _is_header_tree(path: Path) -> bool:
    return (path / "include").is_dir() and (path / "Makefile").exists()


@dataclass(frozen=True)
class _Candidate:
    version: str
    arch_dir: Path  # has include/generated (or is a full tree)
    common_dir: Optional[Path]  # Debian's -common half, when split


def _candidates(usr_src: Path) -> list[_Candidate]:
    """Installed header packages under usr_src, pairing Debian's <ver>-<flavour> with <ver>-common."""
    if not usr_src.is_dir():
        return []
    out = []
    for d in sorted(usr_src.iterdir()):
        name = d.name
        if not name.startswith("linux-headers-") or name.endswith("-common") or not d.is_dir():
            continue
        ver = name[len("linux-headers-") :]
        m = re.match(r"^(.*\d)-([a-z][\w.+]*)$", ver)  # 6.1.0-56-amd64 -> 6.1.0-56 + amd64
        common = usr_src / f"linux-headers-{m.group(1)}-common" if m else None
        common = common if common is not None and common.is_dir() else None
        if common is None and not _is_header_tree(d):
            continue
        out.append(_Candidate(ver, d, common))
    return out


def merge_split_tree(common: Path, arch: Path, dest: Path) -> Path:
    """One tree of common/ overlaid by arch/ (what `cp -rs C/. M/ && cp -rsf A/. M/` gives),
    linked by whole directories: a directory only one side has is one symlink, and only the
    directories both sides have (include/, arch/x86/include/, ...) are made and merged entry by
    entry; where both have a file, arch's wins.

    Reused when a previous run built it from the same two directories. It lives in the runtime
    directory, which systemd empties at every stop: linked file by file (~16k links) it cost 0.3 s
    to several seconds on each start and about a second to remove on each stop; by directory
    it is about a hundred (117 links and 12 directories for Debian 12's 6.1 headers).
    """
    stamp = dest / ".hostagent-merged"
    want = f"{common}\n{arch}\nby directory\n"  # a tree linked file by file is rebuilt once
    if stamp.exists() and stamp.read_text() == want:
        return dest
    # Made beside it and renamed into place: another agent starting on the same runtime directory
    # (a `hostagent run` beside the unit) never compiles against a tree half made or half removed.
    made = dest.with_name(f"{dest.name}.{os.getpid()}.new")
    if made.exists():
        _rmtree_links(made)
    os.makedirs(made)
    _merge_dirs(str(common), str(arch), str(made), depth=0)
    (made / stamp.name).write_text(want)
    if dest.exists():
        old = dest.with_name(f"{dest.name}.{os.getpid()}.old")
        try:
            os.rename(dest, old)
        except FileNotFoundError:  # another start moved it first
            pass
        else:
            _rmtree_links(old)
    try:
        os.rename(made, dest)
    except OSError:  # another start put its tree (from the same halves) there first
        _rmtree_links(made)
    return dest


_MAX_DEPTH = 16  # header trees nest a handful of levels; a link cycle must not recurse forever


def _merge_dirs(common: str, arch: str, dst: str, depth: int) -> None:
    with os.scandir(common) as it:
        entries = {e.name: e for e in it}
    with os.scandir(arch) as it:
        for e in it:
            c = entries.get(e.name)
            # is_dir() follows links: Debian's arch half links scripts/ to linux-kbuild's
            if c is not None and depth < _MAX_DEPTH and c.is_dir() and e.is_dir():
                sub = os.path.join(dst, e.name)
                os.mkdir(sub)
                _merge_dirs(c.path, e.path, sub, depth + 1)
                del entries[e.name]
            else:
                entries[e.name] = e  # arch's wins a clash
    for name, e in entries.items():
        os.symlink(e.path, os.path.join(dst, name))


def _rmtree_links(path: Path) -> None:
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            p = os.path.join(root, d)
            os.unlink(p) if os.path.islink(p) else os.rmdir(p)
    os.rmdir(path)


def find_kernel_headers(
    configured: Optional[str],
    runtime_dir: Path,
    *,
    release: Optional[str] = None,
    modules_root: Path = Path("/lib/modules"),
    usr_src: Path = Path("/usr/src"),
    set_env: bool = True,
) -> HeadersChoice:
    """Choose the header tree bcc compiles against and export it as BCC_KERNEL_SOURCE."""
    release = release or os.uname().release
    choice = _choose(configured, runtime_dir, release, modules_root, usr_src)
    if set_env:
        os.environ["BCC_KERNEL_SOURCE"] = str(choice.path)
    log.info(
        "kernel headers: %s (%s%s) for kernel %s",
        choice.path,
        choice.source,
        "" if choice.exact else f", version {choice.version or 'unknown'}",
        release,
    )
    return choice


def _choose(
    configured: Optional[str], runtime_dir: Path, release: str, modules_root: Path, usr_src: Path
) -> HeadersChoice:
    build = modules_root / release / "build"
    if build.is_dir():
        source = modules_root / release / "source"
        if source.is_dir() and source.resolve() != build.resolve():  # Debian: split in two
            merged = merge_split_tree(source.resolve(), build.resolve(), runtime_dir / f"headers-{release}")
            return HeadersChoice(merged, "matching", release, True)
        return HeadersChoice(build, "matching", release, True)

    want = parse_version(release)
    cands = _candidates(usr_src)
    if cands:
        best = min(cands, key=lambda c: _distance(want, parse_version(c.version)))
        exact = best.version == release
        log.info("no headers at %s; nearest installed are %s", build, best.version)
        if best.common_dir is not None:
            path = merge_split_tree(best.common_dir, best.arch_dir, runtime_dir / f"headers-{best.version}")
        else:
            path = best.arch_dir
        return HeadersChoice(path, "nearest", best.version, exact)

    if configured:
        p = Path(configured)
        if p.is_dir():
            return HeadersChoice(p, "configured", "", False)
        raise KernelNotReady(f"Configured kernel headers path {configured} does not exist.")
    raise KernelNotReady(
        f"No kernel headers found (looked in {build} and {usr_src}/linux-headers-*): "
        "install your distribution's kernel headers package (such as linux-headers-amd64) "
        "or set the headers path in the config."
    )
