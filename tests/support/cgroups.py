"""The cgroup hierarchies this host mounts, and the cgroup directories a test makes by hand (a
unit's or a container's stand-in) and removes after."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The kernel writes a space in a mount point as \040 (tab, newline and backslash likewise).
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def parse_hierarchies(mountinfo: str) -> list[tuple[str, str]]:
    """(label, mount point) of the hierarchies a systemd unit lives in, in mount order: the
    ``name=systemd`` v1 one (hybrid hosts) and the ``unified`` v2 one. A mountinfo line is
    ``ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS``
    (proc(5)); the optional fields vary in number, so the right side is read from the ``-``."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = [*right.split(), "", "", ""][:3]
        if fstype == "cgroup" and "name=systemd" in options.split(","):
            label = "name=systemd"
        elif fstype == "cgroup2":
            label = "unified"
        else:
            continue
        mount_point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), left.split()[4])
        found.append((label, mount_point))
    return found


def hierarchies() -> list[tuple[str, str]]:
    """This host's, from /proc/self/mountinfo: see ``parse_hierarchies``."""
    return parse_hierarchies(Path("/proc/self/mountinfo").read_text())


@contextmanager
def cgroup_dirs(*directories: Path) -> Iterator[None]:
    """Make the directories that do not exist yet, parents first; afterwards remove only those made
    (another test may own the others). rmdir fails while a (dying) member is still listed: retried."""
    made: list[Path] = []
    try:
        for directory in directories:
            if not directory.exists():
                directory.mkdir()
                made.append(directory)
        yield
    finally:
        for directory in reversed(made):
            remove_cgroup_dir(directory)


def remove_cgroup_dir(directory: Path) -> None:
    """rmdir fails while a (dying) member is still listed: retried for up to 5 s."""
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except OSError:
            time.sleep(0.1)
