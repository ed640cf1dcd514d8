"""cgroup id -> cgroup path, for a process that is gone before /proc could be read.

Kernel events carry ``bpf_get_current_cgroup_id()``: the id of the task's cgroup in the unified
(v2) hierarchy, which is the inode number of that cgroup's directory. Where a process exited
before the agent read /proc/PID/cgroup, its exec event still says which cgroup it ran in; this
maps the id back to the path (``/docker/<id>``, ``/system.slice/nginx.service``) that
``parse_cgroup`` reads a container or a unit from.

The map is fed by the kernel's cgroup_mkdir events (``learn``: a container's cgroup is known
before its first exec event, even if it is removed before that event is handled), and by walking
the unified hierarchy: once when the first id is asked for (the cgroups made before the agent
started: that walk runs on the caller's thread, so those ids resolve from the first event on),
and again when an id is not in the map, at most every ``RESCAN_S``, on a thread of its own.
A walk costs ~11-14 us per cgroup (measured here: 6 cgroups 70 us, 26 with 20 containers
270 us, 1027 cgroups 14 ms): on a host with thousands of cgroups, walking on the pipeline
thread every 50 ms while unknown ids arrive (ids whose mkdir event was lost, i.e. under
overload) would take a quarter or more of that thread. Off it, the walks are also kept to
``MAX_DUTY`` of the time. An id unknown when asked is answered None; the later calls of its
process resolve once the walk is done. Ids are not reused while the host runs (kernfs ids are
64-bit and only grow), so a path once learnt stays right for its id. v1-only hosts have no
unified hierarchy: nothing is resolved there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Optional

from hostagent.identity.procfs import ProcFS

RESCAN_S = 0.05  # a docker run's cgroup outlives its process by tens of ms: look again soon
MAX_DUTY = 0.1  # share of the time the rescans may walk (a walk of 14 ms: at most every 140 ms)
MAX_DEPTH = 8  # user.slice/user-1000.slice/user@1000.service/app.slice/x.service is 5
MAX_CGROUPS = 50_000

log = logging.getLogger(__name__)


def unified_path(cgroup_text: str) -> Optional[str]:
    """The path of the ``0::`` line of /proc/PID/cgroup (the unified hierarchy), if any."""
    for line in cgroup_text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or None
    return None


class CgroupIds:
    """See module docstring. Thread-safe (the ring's consumer learns and looks up; the rescans
    run on a thread of their own, started at the first one)."""

    def __init__(self, procfs: ProcFS, clock: Callable[[], float] = time.monotonic) -> None:
        self.procfs = procfs
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._scanned_at: Optional[float] = None  # when the last walk was asked for
        self._lock = threading.Lock()
        self._wanted = threading.Event()  # a rescan is asked for
        self._idle = threading.Event()  # no rescan asked for or running
        self._idle.set()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
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
            last = self._scanned_at
            if last is not None and now - last < RESCAN_S:
                return None
            self._scanned_at = now
            if last is not None:
                self._ask_rescan()
                return None
        self._merge(self._walk())
        with self._lock:
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

    def wait_rescanned(self, timeout: float) -> bool:
        """Wait until no rescan is asked for or running (tests; a stop)."""
        return self._idle.wait(timeout)

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._wanted.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _ask_rescan(self) -> None:
        """Under the lock."""
        self._idle.clear()
        self._wanted.set()
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(target=self._rescans, name="cgroup-walk", daemon=True)
            self._thread.start()

    def _rescans(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopping.is_set():
                self._idle.set()
                return
            self._wanted.clear()
            started = time.perf_counter()
            try:
                self._merge(self._walk())
            except Exception:  # the next unknown id asks again; a bug must not end the thread
                log.exception("cgroup walk failed")
            took = time.perf_counter() - started
            with self._lock:
                if not self._wanted.is_set():
                    self._idle.set()
            self._stopping.wait(took * (1 / MAX_DUTY - 1))

    def _merge(self, found: dict[int, str]) -> None:
        with self._lock:
            if len(self._paths) + len(found) > MAX_CGROUPS:
                self._paths = found  # bounded: past the limit, only the current tree
            else:
                # Keep what removed cgroups mapped to (ids are never reused): the late events
                # of a gone container still resolve.
                self._paths.update(found)

    def _walk(self) -> dict[int, str]:
        mount = self.procfs.unified_cgroup_mount()
        if mount is None:
            return {}
        self.walks += 1
        return dict(self.procfs.cgroup_dirs(mount, MAX_DEPTH, MAX_CGROUPS))
