"""cgroup id -> cgroup path, for a process that is gone before /proc could be read.

Kernel events carry ``bpf_get_current_cgroup_id()``: the id of the task's cgroup in the unified
(v2) hierarchy, which is the inode number of that cgroup's directory. Where a process exited
before the agent read /proc/PID/cgroup, its exec event still says which cgroup it ran in; this
maps the id back to the path (``/docker/<id>``, ``/system.slice/nginx.service``) that
``parse_cgroup`` reads a container or a unit from.

The map is fed by the kernel's cgroup_mkdir events (``learn``: a container's cgroup is known
before its first exec event, even if it is removed before that event is handled), and by walking
the unified hierarchy (the cgroups made before the agent started), again when an id is not in it
but at most every ``RESCAN_S``: a burst of ids that no longer exist costs one walk, not one each.
Ids are not reused while the host runs (kernfs ids are 64-bit and only grow), so a path once
learnt stays right for its id. v1-only hosts have no unified hierarchy: nothing is resolved there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Optional

from hostagent.identity.procfs import ProcFS

RESCAN_S = 0.05  # a docker run's cgroup outlives its process by tens of ms: look again soon
MAX_DEPTH = 8  # user.slice/user-1000.slice/user@1000.service/app.slice/x.service is 5
MAX_CGROUPS = 50_000


def unified_path(cgroup_text: str) -> Optional[str]:
    """The path of the ``0::`` line of /proc/PID/cgroup (the unified hierarchy), if any."""
    for line in cgroup_text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or None
    return None


class CgroupIds:
    """See module docstring. Thread-safe (the ring's consumer learns and looks up; a walk may
    run on another identity thread)."""

    def __init__(self, procfs: ProcFS, clock: Callable[[], float] = time.monotonic) -> None:
        self.procfs = procfs
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._scanned_at: Optional[float] = None
        self._lock = threading.Lock()
        self.walks = 0

    def path_of(self, cgroup_id: int) -> Optional[str]:
        """The unified-hierarchy path of ``cgroup_id``, or None (unknown, or no v2 here)."""
        if not cgroup_id:
            return None
        with self._lock:
            path = self._paths.get(cgroup_id)
            if path is not None:
                return path
            now = self._clock()
            if self._scanned_at is not None and now - self._scanned_at < RESCAN_S:
                return None
            self._scanned_at = now
        found = self._walk()
        with self._lock:
            if len(self._paths) + len(found) > MAX_CGROUPS:
                self._paths = found  # bounded: past the limit, only the current tree
            else:
                # Keep what removed cgroups mapped to (ids are never reused): the late events
                # of a gone container still resolve.
                self._paths.update(found)
            return self._paths.get(cgroup_id)

    def learn(self, cgroup_id: int, path: str) -> None:
        """A cgroup made now (the kernel's cgroup_mkdir event): known before any walk sees it,
        and still after it is removed."""
        with self._lock:
            paths = self._paths
            paths[cgroup_id] = path
            if len(paths) > MAX_CGROUPS:
                del paths[next(iter(paths))]  # the oldest learnt

    def id_of(self, cgroup_text: str) -> Optional[int]:
        """The id of the unified-hierarchy cgroup named in a /proc/PID/cgroup text (one stat)."""
        path = unified_path(cgroup_text)
        mount = self.procfs.unified_cgroup_mount()
        if path is None or mount is None:
            return None
        return self.procfs.cgroup_id(mount, path)

    def _walk(self) -> dict[int, str]:
        mount = self.procfs.unified_cgroup_mount()
        if mount is None:
            return {}
        self.walks += 1
        return dict(self.procfs.cgroup_dirs(mount, MAX_DEPTH, MAX_CGROUPS))
