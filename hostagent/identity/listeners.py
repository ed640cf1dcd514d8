"""Which local process listens on (address, port): for ``service.peer.name`` on client spans.

A client span to 127.0.0.1:8080 should name the service on the other end when that end is on
this host. ``ListenerMap`` keeps (address, port) -> pid for TCP sockets in LISTEN state, built
from the kernel's sock_diag netlink dump of LISTEN sockets (socket inodes; ``sock_diag``;
/proc/net/tcp{,6} where netlink is not available, or under a test root: ``proc_net``) and
/proc/*/fd (which pid holds which inode: ``fd_holders``).
A background thread reads the LISTEN sockets on a timer, or sooner when a lookup of a loopback
endpoint missed (rate-limited, and once per endpoint per period: a remote peer asks nothing). The
kernel's list is cheap (~50 us); walking every process's fds is not (~3 ms per 400 fds, more on a
busy host), so a refresh reads fds only for inodes it has not seen: first those of the pid a LISTEN
event named for the same endpoint, and only what is still unknown by a walk of /proc. A listener
whose holder no walk finds (a kernel socket, a process in a PID namespace the agent cannot see) is
looked for again after a growing delay, not at every refresh: such a socket made every refresh, and
every miss of a client port that is no listener at all, walk all of /proc. Lookups only read a
dict: no I/O.

A server started after the agent is learnt at once from the kernel's LISTEN event (``learn``,
from the pipeline thread, before any call to it can be handled): the refresh alone came too late
for the first client call, whose span was built before the table held the new listener.

A launcher may hold a listener for the process that serves it: under systemd socket activation
(and inetd's ``wait`` services) PID 1 binds and listens, keeps the socket, and the service it
starts later inherits it and accepts on it. The LISTEN event, and the first holder a walk meets,
name the launcher, and the first calls' peer was "systemd". The process that accepts is the
server: an accept by another process than the table's, of another service (a pre-fork server's
worker is the same service as its master, which stays named), names the accepting process from
that accept on (``serve``), until it exits (``holder_exited``: the launcher is named again). A
launcher that accepts and hands each connection to a new process (Accept=yes, inetd ``nowait``)
has that process named, and still after it exits (``listen_events``, ``served``). A walk names a
launcher (PID 1, or a known launcher's comm) only when no other process holds the socket.

Wildcard listeners (0.0.0.0, ::) answer only for loopback peers: a peer 10.1.2.3:8080 is another
host even if something here listens on *:8080. /proc/net is the agent's network namespace, so
containers with their own network namespace are not seen (``--network host`` ones are).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from hostagent.identity.fd_holders import holders_among, is_launcher, scan_fds
from hostagent.identity.proc_net import parse_listening
from hostagent.identity.procfs import ProcFS
from hostagent.identity.served import ServedEndpoints
from hostagent.identity.sock_diag import listening_sockets

log = logging.getLogger(__name__)

_WILDCARDS = ("0.0.0.0", "::")


def _normalise(address: str) -> str:
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address


def _is_loopback(address: str) -> bool:
    # String tests, not ipaddress: this runs per client call (ipaddress parsing costs ~2 us).
    return address.startswith("127.") or address == "::1"


class ListenerMap:
    """(address, port) -> pid of local listeners. ``start()`` runs the refresh thread;
    ``refresh()`` may also be called directly (tests, or a daemon with its own timer)."""

    def __init__(
        self,
        procfs: ProcFS,
        interval: float = 5.0,
        min_gap: float = 0.5,
        max_entries: int = 16384,
        on_new_pid: Optional[Callable[[int], object]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.procfs = procfs
        self._clock = clock  # monotonic seconds; a test's own clock to step through the delays
        self.interval = interval
        self.min_gap = min_gap
        self.max_entries = max_entries
        self.on_new_pid = on_new_pid  # e.g. ServiceCache.service_for, to warm the peer's entry
        self._by_endpoint: dict[tuple[str, int], int] = {}
        self._pid_of_inode: dict[int, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_refresh = 0.0
        self.refreshes = 0
        self.refresh_reasons: dict[str, int] = {"periodic": 0, "miss": 0}  # the thread's, by cause
        self.fd_walks = 0  # walks of every process's fds (what a refresh costs when it has to)
        self._refresh_asked = False  # a loopback miss asked; a warm request alone does not refresh
        # inode -> (monotonic time to look again, walks that missed it): holders no walk found
        self._orphans: dict[int, tuple[float, int]] = {}
        self._warm: set[int] = set()  # pids whose service a lookup found missing (bounded)
        self.truncated = 0  # listeners not kept because of max_entries
        # loopback endpoints whose miss asked for a refresh this period (bounded; see _run)
        self._asked: set[tuple[str, int]] = set()
        # endpoint -> (pid, monotonic time) learnt from LISTEN events: a refresh that read the
        # kernel before the event keeps them (see _swap). Pruned by each refresh.
        self._learnt: dict[tuple[str, int], tuple[int, float]] = {}
        self._swap_lock = threading.Lock()  # learn() against the refresh's swap; never per lookup
        # Bumped after every change to what a lookup answers (the table, what is served): a
        # memo of answers (PeerResolver's) holds while it is the one read before computing them.
        self.generation = 0
        self._own_netns = ""  # the agent's network namespace, read at the first LISTEN event
        self._served = ServedEndpoints()  # who serves a launcher's listener: see serve
        self.served = 0  # endpoints an accept took from a launcher (socket activation)
        self._holder_pids: set[int] = set()  # the table's pids: an EXIT of another costs nothing
        # holders that exited -> the heir named for them (0: none): the next refresh looks for
        # their inodes again
        self._gone: dict[int, int] = {}
        self.other_netns = 0  # LISTEN events not learnt: another network namespace, or gone
        # Where the LISTEN sockets come from: sock_diag on the live system (its cost does not grow
        # with the host's connections, /proc/net/tcp's does), the text files under another root.
        self._listening: Callable[[], dict[int, tuple[str, int]]] = (
            self._from_sock_diag if procfs.root == "/" else self._from_proc_net)

    # --- hot path ----------------------------------------------------------------------------
    def pid_for(self, address: str, port: int) -> Optional[int]:
        """The pid listening on (address, port), from the last refresh; a miss asks the thread
        to refresh soon (no I/O here)."""
        address = _normalise(address)
        table = self._by_endpoint  # one reference read: the refresh swaps whole dicts
        pid = table.get((address, port))
        if pid is None and _is_loopback(address):
            pid = table.get(("0.0.0.0", port)) or table.get(("::", port))
            if pid is None and address == "::1":
                pid = table.get(("127.0.0.1", port))
        if pid is None and _is_loopback(address):
            # a new local server, probably: refresh soon, once per endpoint and period
            key = (address, port)
            if (key not in self._asked and len(self._asked) < 4096 and not self._refresh_asked
                    and self._clock() - self._last_refresh >= self.min_gap):
                self._asked.add(key)
                self._refresh_asked = True
                self._wake.set()
        return pid

    def snapshot(self) -> dict[tuple[str, int], int]:
        """The current (address, port) -> pid table (a copy)."""
        return dict(self._by_endpoint)

    def request_warm(self, pid: int) -> None:
        """Ask the refresh thread to compute ``pid``'s service (a peer lookup found it missing)."""
        if self.on_new_pid is not None and len(self._warm) < 1024:
            self._warm.add(pid)
            self._wake.set()

    def learn(self, address: str, port: int, pid: int) -> bool:
        """The kernel says ``pid`` listens on (address, port) now (a LISTEN event): served from
        the next lookup on; True when learnt. The table is updated in place; lookups read it
        without a lock.

        Only a listener in the agent's network namespace is learnt, as the refresh sees only
        those: a container's own 127.0.0.1:5432 or a pod's :8080 is not this host's port, and
        would name the wrong peer until the next refresh. One readlink per listen(); a process
        already gone is left to the refresh."""
        if not self._in_own_netns(pid):
            self.other_netns += 1
            return False
        key = (_normalise(address), port)
        with self._swap_lock:
            table = self._by_endpoint
            if key not in table and len(table) >= self.max_entries:
                self.truncated += 1
                return False
            self._learnt[key] = (pid, self._clock())
            table[key] = pid
            self._holder_pids.add(pid)
            self._served.forget(key)  # a new socket: what accepts on the old one said is past
            self.generation += 1  # after the change: see __init__
        self._asked.discard(key)
        return True

    def _in_own_netns(self, pid: int) -> bool:
        own = self._own_netns
        if not own:
            own = self._own_netns = self.procfs.net_namespace("self")
        return bool(own) and self.procfs.net_namespace(pid) == own

    # --- what accepts and exits teach (socket activation) --------------------------------------
    def holder(self, address: str, port: int) -> Optional[tuple[tuple[str, int], int]]:
        """The table's endpoint that a connection accepted on local (address, port) came through,
        and its pid; None when the table has none. No I/O, no refresh asked."""
        table = self._by_endpoint
        key = (_normalise(address), port)
        pid = table.get(key)
        if pid is None:
            for key in (("0.0.0.0", port), ("::", port)):
                pid = table.get(key)
                if pid is not None:
                    break
        return (key, pid) if pid is not None else None

    def serve(self, key: tuple[str, int], pid: int, launcher: int, service: Optional[Any] = None) -> bool:
        """``pid`` accepted a connection on ``key``, whose listener the table says ``launcher``
        holds: ``pid`` is named from now on (the caller decided that it is another service). True
        when taken; not when the table changed meanwhile, ``pid`` is in another network namespace
        or gone, or at the bound.

        ``service``: ``pid`` serves one connection the launcher accepted and handed it (systemd
        ``Accept=yes``, inetd ``nowait``): the next connection goes to another process of the same
        service, so its Service still names the endpoint after it exits (see ``served_service``),
        and the next such process takes the endpoint from it."""
        # A per-connection server serves a socket its launcher accepted here, and is often gone
        # when its EXEC is read: its own namespace says nothing more.
        if service is None and not self._in_own_netns(pid):
            return False
        with self._swap_lock:
            table = self._by_endpoint
            if not self._served.take(key, pid, launcher, table.get(key), service):
                return False
            table[key] = pid
            self._holder_pids.add(pid)
            self.generation += 1
        self.served += 1
        return True

    def served_service(self, pid: int) -> Optional[Any]:
        """The Service of a per-connection server the table names (``serve``), alive or not."""
        return self._served.service_of(pid)

    def launcher_of(self, key: tuple[str, int]) -> Optional[int]:
        """The launcher of an endpoint the table names a served process for (see ``serve``)."""
        return self._served.launcher_of(key)

    def holds(self, pid: int) -> bool:
        """Whether the table names ``pid`` (or it launches a served endpoint's process)."""
        return pid in self._holder_pids

    def holder_exited(self, pid: int, heirs: Sequence[int] = ()) -> Optional[int]:
        """EXIT of ``pid``: when the table names it, a socket it held may outlive it (a launcher's,
        a pre-fork master's): its endpoints served by accept go back to their launcher, the others
        go to the first of ``heirs`` alive here (children it forked, which share its sockets: a
        daemonising server's master), and the next refresh looks for the holders of its sockets
        again (a dead pid is no peer). Returns the heir named for an endpoint, if any."""
        if pid not in self._holder_pids:
            return None
        # gone too (its EXIT not read yet): the next one, else the refresh decides
        heir = next((child for child in heirs if self._in_own_netns(child)), None)
        with self._swap_lock:
            self._holder_pids.discard(pid)
            self._gone[pid] = 0
            table = self._by_endpoint
            for key, launcher in self._served.exited(pid).items():
                if table.get(key) == pid:
                    table[key] = launcher
            if heir is not None and self._hand_on(pid, heir):
                self._gone[pid] = heir
            else:
                heir = None
            self.generation += 1  # after the changes: see __init__
        return heir

    def _hand_on(self, pid: int, heir: int) -> bool:
        """Name ``heir`` where the table names ``pid`` (under the swap lock), and in what LISTEN
        events taught: a refresh under way keeps it."""
        table = self._by_endpoint
        handed = False
        for key, holder in table.items():
            if holder == pid:
                table[key] = heir
                handed = True
        for key, (holder, at) in self._learnt.items():
            if holder == pid:
                self._learnt[key] = (heir, at)
        if handed:
            self._holder_pids.add(heir)
        return handed

    # --- refresh -----------------------------------------------------------------------------
    def _from_proc_net(self) -> dict[int, tuple[str, int]]:
        sockets = parse_listening(self.procfs.net_file("tcp"))
        sockets.update(parse_listening(self.procfs.net_file("tcp6")))
        return sockets

    def _from_sock_diag(self) -> dict[int, tuple[str, int]]:
        try:
            return listening_sockets()
        except (OSError, ValueError) as e:
            log.info("sock_diag netlink not available (%s): listeners are read from /proc/net/tcp", e)
            self._listening = self._from_proc_net
            return self._from_proc_net()

    def refresh(self) -> None:
        started = self._clock()
        self._refresh_asked = False  # this read of the kernel answers the misses asked so far
        sockets = self._listening()
        with self._swap_lock:
            gone, self._gone = self._gone, {}
        known = {inode: pid for inode, pid in self._pid_of_inode.items() if inode in sockets and pid not in gone}
        self._orphans = {inode: seen for inode, seen in self._orphans.items() if inode in sockets}
        missing = {inode for inode in sockets if inode not in known and self._look_for(inode, started)}
        if missing:
            found = self._find_holders(missing, sockets)
            known.update(found)
            for inode in found:
                self._orphans.pop(inode, None)
            self._note_orphans(missing - found.keys(), started)
        new_pids = self._swap(sockets, known, started)
        self._last_refresh = self._clock()
        self.refreshes += 1
        if self.on_new_pid is not None:
            for pid in new_pids:
                try:
                    self.on_new_pid(pid)
                except Exception:
                    log.debug("warming the service of listener pid %d failed", pid, exc_info=True)

    def _table(self, sockets: dict[int, tuple[str, int]], known: dict[int, int]) -> dict[tuple[str, int], int]:
        table: dict[tuple[str, int], int] = {}
        for inode, (address, port) in sockets.items():
            pid = known.get(inode)
            if pid is None:
                continue
            if len(table) >= self.max_entries:
                self.truncated += 1
                continue
            table[(_normalise(address), port)] = pid
        return table

    def _swap(self, sockets: dict[int, tuple[str, int]], known: dict[int, int], started: float) -> set[int]:
        """Install a refreshed table, keeping what LISTEN events taught after its kernel read
        started (the read did not see those listeners yet; older lessons are in the read), and
        which processes serve a launcher's sockets. Holders that exited during the refresh are
        left out, or replaced by the heir their EXIT named (looked for again next time). Returns
        the pids new to the table."""
        with self._swap_lock:
            table_known = known
            if self._gone:
                # an heir named at its holder's EXIT stays named; its fds are read next time
                heirs = {inode: self._gone[pid] for inode, pid in known.items() if self._gone.get(pid)}
                known = {inode: pid for inode, pid in known.items() if pid not in self._gone}
                table_known = {**known, **heirs}
            table = self._table(sockets, table_known)
            learnt = {key: value for key, value in self._learnt.items() if value[1] >= started}
            for key, (pid, _) in learnt.items():
                if key in table or len(table) < self.max_entries:
                    table[key] = pid
            self._learnt = learnt
            self._served.keep(table)
            new_pids = set(table.values()) - set(self._by_endpoint.values())
            self._pid_of_inode = known
            self._by_endpoint = table
            self.generation += 1
            # with the launchers of served endpoints: their EXECs and EXITs matter (listen_events)
            self._holder_pids = set(table.values()) | self._served.launchers()
        return new_pids

    def _look_for(self, inode: int, now: float) -> bool:
        seen = self._orphans.get(inode)
        return seen is None or now >= seen[0]

    def _note_orphans(self, inodes: set[int], now: float) -> None:
        """Holders not found: look again after interval, 2x, 4x... up to 64x (5 min by default).
        The first retry catches a socket that was between two processes during the walk."""
        for inode in inodes:
            misses = self._orphans.get(inode, (0.0, 0))[1] + 1
            self._orphans[inode] = (now + self.interval * (1 << min(misses - 1, 6)), misses)

    def _find_holders(self, missing: set[int], sockets: dict[int, tuple[str, int]]) -> dict[int, int]:
        """inode -> pid for ``missing``: the fds of the pid the table names for the same endpoint
        (a LISTEN event's, nearly always the holder) first; a walk of /proc for the rest."""
        hinted: dict[int, set[int]] = {}
        table = self._by_endpoint
        for inode in missing:
            address, port = sockets[inode]
            pid = table.get((_normalise(address), port))
            if pid is not None:
                hinted.setdefault(pid, set()).add(inode)
        launched: dict[int, int] = {}  # inode -> a launcher holding it, until another holder is found
        found = holders_among(self.procfs, hinted, launched)
        rest = missing - found.keys()
        if rest:
            found.update(self._scan_fds(rest, launched))
        return found

    def _scan_fds(self, wanted: set[int], launched: dict[int, int]) -> dict[int, int]:
        """inode -> its first (lowest listed) holder that is no launcher (pre-fork servers share
        a socket: the master), else the launcher (a socket-activated service not started yet)."""
        self.fd_walks += 1
        return scan_fds(self.procfs, wanted, launched)

    def is_launcher(self, pid: int) -> bool:
        """PID 1 or a known launcher's comm (reads /proc: not for the hot path)."""
        return is_launcher(self.procfs, pid)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="listener-map", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _warm_requested(self) -> None:
        while self._warm and self.on_new_pid is not None:
            pid = self._warm.pop()
            try:
                self.on_new_pid(pid)
            except Exception:
                log.debug("warming the service of pid %d failed", pid, exc_info=True)

    def _run(self) -> None:
        next_periodic = 0.0
        while not self._stop.is_set():
            periodic = self._clock() >= next_periodic
            if periodic or self._refresh_asked:
                if periodic:
                    self._asked.clear()  # misses may ask again
                self.refresh_reasons["periodic" if periodic else "miss"] += 1
                try:
                    self.refresh()
                except Exception:
                    log.exception("listener map refresh failed")
                if periodic:
                    next_periodic = self._clock() + self.interval
            self._wake.wait(max(0.0, next_periodic - self._clock()))
            self._wake.clear()
            if self._stop.is_set():
                return
            self._warm_requested()  # a warm request wakes the thread for that alone
            if self._refresh_asked:
                # Rate limit: a burst of misses costs at most one refresh per min_gap.
                remaining = self.min_gap - (self._clock() - self._last_refresh)
                if remaining > 0:
                    self._stop.wait(remaining)

