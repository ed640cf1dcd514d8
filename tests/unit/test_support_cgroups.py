"""tests/support/cgroups.parse_hierarchies: which cgroup mounts a hand-made systemd unit lives in."""

from __future__ import annotations

import pytest

from tests.support.cgroups import parse_hierarchies

# This machine's /proc/self/mountinfo, the cgroup lines verbatim: hybrid v1 with systemd's named
# hierarchy and the unified one beside it.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

CASES = [
    ("hybrid: named v1 then unified, in mount order", HYBRID,
     [("name=systemd", "/sys/fs/cgroup/systemd"), ("unified", "/sys/fs/cgroup/unified")]),
    # A v2-only host (systemd's default since v247): optional fields (shared:N) before the "-".
    ("v2 only, with optional fields",
     "25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
     [("unified", "/sys/fs/cgroup")]),
    # The fstype is what counts, not the source (here "none") nor the mount point's name.
    ("v1 named hierarchy with another source",
     "40 31 0:37 / /run/cg/systemd rw - cgroup none rw,xattr,name=systemd\n",
     [("name=systemd", "/run/cg/systemd")]),
    ("a named hierarchy that is not systemd's",
     "40 31 0:37 / /sys/fs/cgroup/elogind rw - cgroup cgroup rw,name=elogind\n", []),
    ("a mount point with a space, escaped by the kernel",
     "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n", [("unified", "/mnt/cg two")]),
    ("no cgroup mounts", "22 1 0:21 / /proc rw - proc proc rw\n", []),
    ("empty", "", []),
]


@pytest.mark.parametrize(("mountinfo", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_hierarchies(mountinfo: str, expected: list[tuple[str, str]]) -> None:
    assert parse_hierarchies(mountinfo) == expected
