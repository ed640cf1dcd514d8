"""The identity cache's memory: what is known per pid, every map bounded, one lock.

- live: pid -> entry of a running process (an LRU of ``max_entries``);
- exited: entries of processes that exited, for their calls still in the pipeline, and the
  exec-time entries of processes gone before they were read;
- forked: child pid -> parent pid, from fork events, so that a child gone before its first call
  is named from its parent;
- recent: the live entries looked up since the live map last changed, read without the lock
  (``ServiceCache``'s and the pipeline's fast path: a dict read, against a method call, the lock
  and an LRU move). Every change to the live map empties it first, under the lock, so it never
  holds an entry the live map does not (a hit through it answers what ``hit`` would). A lookup
  through it does not move the entry in the LRU order: an entry counts as used when it was first
  looked up since the last change (the bound evicts by that; an evicted entry is read again);
- generation: a count bumped after every change to the live map (``PeerResolver``'s memo of peer
  answers holds while it has not moved);
- gone: what a pid found gone at its first lookup was answered, per comm, for ``GONE_TTL_S``:
  a burst of late calls from a process that just exited costs one failed /proc read (~60 us
  here), not one per call. Exec and fork events for that pid forget the answer at once; the TTL
  bounds how long a pid reused without either event (a fork by a process that holds no socket)
  could be answered as the gone one.

The maps hold no I/O and no naming: ``ServiceCache`` decides what goes where.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Optional, TypeVar

from hostagent.identity.reader import Entry

GONE_TTL_S = 1.0  # how long a gone pid's made-up answer is served without looking at /proc again
GONE_COMMS = 8  # made-up answers kept per gone pid (one per comm it was seen with)

_V = TypeVar("_V")


def _put_bounded(table: OrderedDict[int, _V], pid: int, value: _V, limit: int) -> int:
    """Insert as the newest; drop the oldest past ``limit``. Returns how many were dropped."""
    table[pid] = value
    table.move_to_end(pid)
    dropped = 0
    while len(table) > limit:
        table.popitem(last=False)
        dropped += 1
    return dropped


class PidMaps:
    """See module docstring. Thread-safe: the pipeline thread looks up, the Docker thread and the
    exec/exit consumer update."""

    def __init__(self, max_entries: int, max_exited: int, clock: Callable[[], float]) -> None:
        self.max_entries = max_entries
        self.max_exited = max_exited
        self._clock = clock
        self._live: OrderedDict[int, Entry] = OrderedDict()
        self._exited: OrderedDict[int, Entry] = OrderedDict()
        self._forked: OrderedDict[int, int] = OrderedDict()
        self._gone: OrderedDict[int, tuple[float, dict[str, Entry]]] = OrderedDict()
        self._lock = threading.Lock()
        # pid -> its live entry, for lookups without the lock (see the module docstring). The one
        # dict for the object's life (cleared, never replaced): readers may keep a reference.
        self.recent: dict[int, Entry] = {}
        # Bumped after every change to the live map (what ``peek`` answers): a memo of answers
        # made from it (PeerResolver's) holds while it is the one read before computing them.
        self.generation = 0
        self.evictions = 0  # live entries dropped by the LRU bound

    # --- hot path ----------------------------------------------------------------------------
    def hit(self, pid: int) -> Optional[Entry]:
        """The live entry, marked as the most recently used."""
        with self._lock:
            entry = self._live.get(pid)
            if entry is not None:
                self._live.move_to_end(pid)
                self.recent[pid] = entry
            return entry

    def peek(self, pid: int) -> Optional[Entry]:
        with self._lock:
            return self._live.get(pid)

    # --- updates -----------------------------------------------------------------------------
    def put(self, pid: int, entry: Entry) -> None:
        """A process read alive: what was known of an earlier one with its pid is stale."""
        with self._lock:
            self._exited.pop(pid, None)
            self._gone.pop(pid, None)
            self.recent.clear()  # before the change: a reader between the two misses, then waits
            self.evictions += _put_bounded(self._live, pid, entry, self.max_entries)
            self.generation += 1  # after the change (and any eviction)

    def put_exited(self, pid: int, entry: Entry) -> None:
        with self._lock:
            _put_bounded(self._exited, pid, entry, self.max_exited)

    def exit(self, pid: int) -> None:
        """The process exited: its entry serves only its late calls from now on."""
        with self._lock:
            if pid in self._live:
                self.recent.clear()
            entry = self._live.pop(pid, None)
            if entry is not None:
                self.generation += 1
                _put_bounded(self._exited, pid, entry, self.max_exited)

    def forget(self, pid: int) -> None:
        """The pid runs another program now (exec): nothing known of it holds."""
        with self._lock:
            if pid in self._live:
                self.recent.clear()
            if self._live.pop(pid, None) is not None:
                self.generation += 1
            self._exited.pop(pid, None)
            self._gone.pop(pid, None)

    def fork(self, child: int, parent: int) -> None:
        with self._lock:
            self._gone.pop(child, None)  # a new process has the pid now
            _put_bounded(self._forked, child, parent, self.max_exited)

    def remember_gone(self, pid: int, comm: str, entry: Entry) -> None:
        now = self._clock()
        with self._lock:
            gone = self._gone.get(pid)
            if gone is None or now >= gone[0] or len(gone[1]) >= GONE_COMMS:
                gone = (now + GONE_TTL_S, {})
            gone[1][comm] = entry
            _put_bounded(self._gone, pid, gone, self.max_exited)

    # --- reads -------------------------------------------------------------------------------
    def gone_answer(self, pid: int, comm: str) -> Optional[Entry]:
        """What a gone ``pid`` seen with ``comm`` was answered, while that answer is fresh."""
        with self._lock:
            gone = self._gone.get(pid)
        if gone is None:
            return None
        entry = gone[1].get(comm)
        if entry is not None and self._clock() < gone[0]:
            return entry
        return None

    def exited(self, pid: int) -> Optional[Entry]:
        with self._lock:
            return self._exited.get(pid)

    def live_or_exited(self, pid: int) -> tuple[Optional[Entry], Optional[Entry]]:
        with self._lock:
            return self._live.get(pid), self._exited.get(pid)

    def parent_of(self, pid: int) -> Optional[int]:
        """The parent a fork event named for ``pid``, if one was seen."""
        with self._lock:
            return self._forked.get(pid)

    def live_pids(self, container_id: Optional[str]) -> list[int]:
        """The live pids in container ``container_id`` (None: in any container)."""
        with self._lock:
            return [
                pid
                for pid, entry in self._live.items()
                if entry.service.container_id is not None
                and (container_id is None or entry.service.container_id == container_id)
            ]

    def live_start_ticks(self) -> list[tuple[int, int]]:
        with self._lock:
            return [(pid, entry.service.start_ticks) for pid, entry in self._live.items()]

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"live": len(self._live), "exited": len(self._exited), "forked": len(self._forked),
                    "gone": len(self._gone)}  # fmt: skip

    def __len__(self) -> int:
        return len(self._live)
