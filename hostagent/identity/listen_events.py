"""What the kernel's process and LISTEN events teach the listener table (``ListenerMap``).

A LISTEN event names the process that moved a socket to LISTEN; ``ListenerMap.learn`` serves it
from the next lookup on, and its Service is read at once so that a peer lookup only peeks the
cache. Two launchers make that process the wrong one to name, and are followed here:

- A daemonising launcher (nginx as systemd's Type=forking starts it: daemon and master process
  on) listens, forks and exits: its LISTEN event's pid is gone when the ring is read (every
  50 ms), so ``learn`` refuses it and the first calls to the new server had no peer. Its ends are
  kept (bounded) for the child of its next FORK event, which holds the sockets now; a child gone
  too passes them on (double fork). Its EXIT drops them.
  When the LISTEN event is handled while that launcher is still alive (it exits a few ms later),
  the table names it, and its EXIT left a dead pid there until the next periodic refresh: no
  peer for the first calls. The children that a holder (and their children) forked are followed,
  and a holder's EXIT hands its endpoints to its latest child still alive and running the same
  program (a forked child shares the listening socket; one that exec'd another program does not,
  as servers' sockets are close-on-exec). A refresh checks the fds of the pid it names.
- A socket-activating launcher (systemd as PID 1, inetd) listens and keeps the socket; the
  service it starts later inherits it and accepts on it. Its LISTEN event names the launcher, and
  the first calls' peer was "systemd". The first accept by a process of another service than the
  listener's names that process (``ListenerMap.serve``): its ACCEPT event comes before any reply
  its client can read, so the client's first span names the server. A pre-fork server's workers
  are the master's service: the master stays named. Each (endpoint, pid) is judged once.
- A launcher that accepts itself and hands each connection to a new process (systemd
  ``Accept=yes``, inetd ``nowait``) keeps the listener, and the server never accepts: the peer
  stayed "systemd". The process its launcher execs for a connection serves the endpoint
  (``ListenerMap.serve`` with its Service, kept after it exits: the next connection goes to
  another process of the same service). Which endpoint: systemd names the unit after the
  connection (``foo@3-127.0.0.1:8080-127.0.0.1:41234.service``); inetd's child is in inetd's own
  unit and serves the connection inetd accepted last (it accepts, forks and execs in turn).
"""

from __future__ import annotations

from typing import Optional, Protocol

from hostagent.identity.cgroup import accepted_instance_end
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.resource import Service
from hostagent.model import CaptureEvent, EventKind

# Bounds the listeners kept for a gone process's child: processes (their EXIT events clear them),
# and ends per process (a server listens on a few).
MAX_ORPHAN_LISTENERS = 64
MAX_JUDGED = 4096  # accepting pids whose service was compared with their listener's (EXIT clears)
MAX_QUIET = 4096  # accepts remembered as teaching nothing (see _quiet)

MAX_FOLLOWED = 4096  # holders and descendants whose children are followed (EXIT clears)
CHILDREN_KEPT = 4  # per followed process: its latest children

HANDED_WITHIN_NS = 1_000_000_000  # from a launcher's accept to the EXEC of the server it starts
MAX_LAUNCHERS = 4096  # pids judged launcher or not: listeners' and parents of EXECs (EXIT clears)

_ACCEPT, _EXEC, _EXIT, _FORK, _LISTEN = (
    EventKind.ACCEPT, EventKind.EXEC, EventKind.EXIT, EventKind.FORK, EventKind.LISTEN)
# The non-data kinds ``on_event`` does nothing with: the pipeline does not hand them in (a
# connection per request makes a CONNECT and two CLOSEs per call).
IGNORED = frozenset({EventKind.CONNECT, EventKind.CLOSE})


class Services(Protocol):
    def service_for(self, pid: int, comm: str = "", cgroup_id: int = 0) -> Service: ...


class ListenEvents:
    """Feeds ``listeners`` from the pipeline's non-data events (``on_event``, poll thread only)."""

    def __init__(self, listeners: ListenerMap, services: Services) -> None:
        self.listeners = listeners
        self.services = services  # ServiceCache: the listener's Service, read once at its event
        # pid gone before its LISTEN events were handled -> their (address, port): see _passed_on
        self._orphans: dict[int, list[tuple[str, int]]] = {}
        # accepting pid -> the endpoints whose listener's service it was compared with
        self._judged: dict[int, set[tuple[str, int]]] = {}
        self._launcher: dict[int, bool] = {}  # listener pid -> whether it is a launcher (read once)
        # launcher pid -> the endpoint of the connection it accepted last, and when (kernel ns):
        # for the process it starts for it (inetd nowait: see _exec)
        self._handed: dict[int, tuple[tuple[str, int], int]] = {}
        # a holder (or a child of one) -> its latest children, for its EXIT: see _heirs_of
        self._children: dict[int, list[int]] = {}
        self._heirs: set[int] = set()  # those children, while alive and not exec'd
        # (pid, local port, local address) -> the listener table's generation when an accept there
        # taught nothing and could teach nothing more (judged already, no launcher involved): the
        # next accept of that pid on that end returns after one lookup (a connection per request
        # made the five lookups of ``_accepted``, three of them interpreted, per connection). It
        # holds while the table is the one judged on (its generation) and while ``_judged`` and
        # ``_launcher`` keep what they said: anything that drops entries of theirs clears it.
        self._quiet: dict[tuple[int, int, str], int] = {}

    def on_event(self, event: CaptureEvent) -> None:
        """A non-data event; those of the ``IGNORED`` kinds change nothing."""
        kind = event.kind
        if kind == _ACCEPT:
            if event.local_port:
                self._accepted(event)
        elif kind == _LISTEN:
            # A server started listening: its first client call (handled after this event, queued
            # before the connection could exist) names it as the peer.
            self._learn(event.pid, (event.local_addr, event.local_port), event)
        elif kind == _FORK:
            if self._orphans:
                self._passed_on(event.size, event)  # size carries the parent's tgid
            self._follow(event.size, event.pid)
        elif kind == _EXEC:
            self._heirs.discard(event.pid)  # another program: a server's socket was closed on exec
            if event.size and self._is_launcher(event.size):  # size: the parent's tgid
                self._exec(event)
        elif kind == _EXIT:
            pid = event.pid
            if self._quiet and (pid in self._judged or pid in self._launcher):
                self._quiet.clear()
            self._orphans.pop(pid, None)
            self._judged.pop(pid, None)
            self._launcher.pop(pid, None)
            self._handed.pop(pid, None)
            heir = self.listeners.holder_exited(pid, self._heirs_of(pid))
            if heir is not None:
                self.services.service_for(heir)  # read now: the next call's lookup only peeks

    def _learn(self, pid: int, end: tuple[str, int], event: CaptureEvent) -> None:
        """``pid`` listens on ``end``: learnt with its Service, or, when ``pid`` is already gone,
        kept for the child it forked before going, which holds the socket now."""
        listeners = self.listeners
        if listeners.learn(end[0], end[1], pid):
            self.services.service_for(pid, event.comm, event.cgroup_id)
        elif not listeners.procfs.net_namespace(pid):  # gone (another namespace's process is not)
            ends = self._orphans.get(pid)
            if ends is None and len(self._orphans) < MAX_ORPHAN_LISTENERS:
                ends = self._orphans[pid] = []
            if ends is not None and len(ends) < MAX_ORPHAN_LISTENERS:
                ends.append(end)

    def _follow(self, parent: int, child: int) -> None:
        """A FORK: a child of a holder (or of such a child: a double fork) may hold its sockets
        after it exits."""
        children = self._children.get(parent)
        if children is None:
            if parent not in self._heirs and not self.listeners.holds(parent):
                return
            if len(self._children) >= MAX_FOLLOWED:
                self._children.clear()
                self._heirs.clear()
            children = self._children[parent] = []
        children.append(child)
        if len(children) > CHILDREN_KEPT:
            self._heirs.discard(children.pop(0))
        self._heirs.add(child)

    def _heirs_of(self, pid: int) -> list[int]:
        """``pid`` exited: its children still running the same program, latest first, each
        followed by its own (a double fork's grandchild, when the child is gone too)."""
        self._heirs.discard(pid)
        heirs: list[int] = []
        pending = list(self._children.pop(pid, ()))
        while pending and len(heirs) < CHILDREN_KEPT * CHILDREN_KEPT:
            child = pending.pop()
            if child in self._heirs:
                heirs.append(child)
                pending.extend(self._children.get(child, ()))
        return heirs

    def _passed_on(self, parent: int, event: CaptureEvent) -> None:
        """A FORK of ``parent``, which listened and was gone when its LISTEN events were handled:
        the child has the sockets."""
        ends = self._orphans.pop(parent, None)
        for end in ends or ():
            self._learn(event.pid, end, event)

    def _accepted(self, event: CaptureEvent) -> None:
        """``event.pid`` accepted a connection on its local end: when the table names another
        process of another service for that listener, the accepting one serves it."""
        pid = event.pid
        generation = self.listeners.generation
        quiet = (pid, event.local_port, event.local_addr)
        if self._quiet.get(quiet) == generation:
            return  # as below, nothing to learn: the same answers from the same table
        found = self.listeners.holder(event.local_addr, event.local_port)
        if found is None:
            if not self._unknown_listener(event):
                self._still(quiet, generation)
            return
        key, holder = found
        launcher = self.listeners.launcher_of(key)
        if launcher is None and self._is_launcher(holder):
            launcher = holder
        if launcher is not None:
            self._handed[launcher] = (key, event.ts_ns)  # per accept: never quiet
            if holder == pid or launcher == pid or self.listeners.served_service(holder) is not None:
                return  # the launcher's own accept (or its helper's, for a per-connection server)
        elif holder == pid or self.listeners.served_service(holder) is not None:
            self._still(quiet, generation)
            return
        if not self._first_judgement(pid, key):
            if launcher is None:
                self._still(quiet, generation)
            return
        server = self.services.service_for(pid, event.comm, event.cgroup_id)
        if server.name != self.services.service_for(holder).name:
            self.listeners.serve(key, pid, holder)

    def _still(self, quiet: tuple[int, int, str], generation: int) -> None:
        """An accept that taught nothing, and whose repeat would teach nothing while the table's
        generation is ``generation``: remembered (bounded)."""
        if len(self._quiet) >= MAX_QUIET:
            self._quiet.clear()
        self._quiet[quiet] = generation

    def _unknown_listener(self, event: CaptureEvent) -> bool:
        """An accept on a listener the table does not have: the accepting process holds it (accept()
        takes the listening fd). systemd 252 listens in a short-lived "(sd-listen)" child and keeps
        the socket in PID 1: that LISTEN event's pid was gone when read, and the activated
        service's first call had no peer until a refresh. Once per (pid, endpoint): a container's
        own listeners are not learnt (another network namespace), and their accepts stay cheap."""
        pid, end = event.pid, (event.local_addr, event.local_port)
        if not self._first_judgement(pid, end):
            return False  # judged before: nothing to learn
        if self.listeners.learn(end[0], end[1], pid):
            self.services.service_for(pid, event.comm, event.cgroup_id)
        return True

    def _first_judgement(self, pid: int, key: tuple[str, int]) -> bool:
        """True the first time (pid, endpoint) is asked (bounded: cleared whole at MAX_JUDGED)."""
        judged = self._judged.get(pid)
        if judged is not None and key in judged:
            return False
        if judged is None:
            if len(self._judged) >= MAX_JUDGED:
                self._judged.clear()
                self._quiet.clear()
            judged = self._judged[pid] = set()
        judged.add(key)
        return True

    def _is_launcher(self, pid: int) -> bool:
        known = self._launcher.get(pid)
        if known is None:
            if len(self._launcher) >= MAX_LAUNCHERS:
                self._launcher.clear()
                self._quiet.clear()
            known = self._launcher[pid] = self.listeners.is_launcher(pid)
        return known

    def _gone_holder(self, found: tuple[tuple[str, int], int], launcher: int) -> bool:
        """The table names for an endpoint that ``launcher`` accepted a connection on (its
        per-connection unit says so) a process gone, neither the launcher nor one of its servers:
        systemd's "(sd-listen)" child, learnt while it was alive (its LISTEN event read within the
        ~40 us it lives after listen(), or a refresh that walked /proc then: it is no launcher, so
        a walk prefers it to PID 1). That dead pid stayed named until the next refresh, ``serve``
        refused the server (the table's holder was not its launcher), and the calls had no peer.
        A live holder stays: another listener may have taken the endpoint since."""
        key, holder = found
        listeners = self.listeners
        return (holder != launcher and listeners.launcher_of(key) != launcher
                and not listeners.procfs.net_namespace(holder))

    def _exec(self, event: CaptureEvent) -> None:
        """A process the launcher ``event.size`` started: when it serves a connection the launcher
        accepted (see the module docstring), it names the endpoint."""
        launcher, pid = event.size, event.pid
        services = self.services
        server = services.service_for(pid, event.comm, event.cgroup_id)
        own = services.service_for(launcher)
        if server.name == own.name:
            return
        key: Optional[tuple[str, int]] = None
        end = accepted_instance_end(server.systemd_unit) if server.systemd_unit else None
        if end is not None:
            listeners = self.listeners
            found = listeners.holder(*end)
            if found is not None and self._gone_holder(found, launcher):
                end = found[0]  # its launcher holds it now: learnt below as for no holder at all
                found = None
            if found is None and listeners.learn(end[0], end[1], launcher):
                # systemd 252 listens in a short-lived "(sd-listen)" child, gone when its LISTEN
                # event is read: the first connection's unit is the first to name the endpoint.
                found = listeners.holder(*end)
            key = found[0] if found is not None else None
        elif server.systemd_unit == own.systemd_unit:
            handed = self._handed.pop(launcher, None)
            # inetd forks and execs right after its accept; an accept it served itself (its
            # internal services) must not name a process it starts much later
            if handed is not None and event.ts_ns - handed[1] <= HANDED_WITHIN_NS:
                key = handed[0]
        if key is not None:
            self.listeners.serve(key, pid, launcher, server)
