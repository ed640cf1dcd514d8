"""The public admin Unix socket, with the caller's uid/gid/pid from the kernel (SO_PEERCRED).

gRPC Python does not expose a Unix-socket peer's credentials (grpc/grpc#15511: the auth context
is empty for UDS, LocalServerCredentials never calls SO_PEERCRED). So the agent owns the public
socket itself: for each accepted connection it reads SO_PEERCRED, then relays the bytes to the
gRPC server's private socket over a connection *bound to an abstract address that names the
peer* (``hostagent-admin/<server id>/<uid>/<gid>/<pid>/<n>``). gRPC reports that address as
``context.peer()`` (``unix-abstract:...``), which hostagent.admin.access parses.

Why this cannot be forged: the private socket lives in a 0700 directory only root can enter, so
the only process that can connect to it (and choose the bound name) is root -- the agent.
The public socket is created in a private directory, given its mode and group, and only then
renamed into place, so it is never reachable with looser permissions.

Cost: two relay threads per admin connection (one per direction). Admin connections are few
and short, except ``tail``; the number of concurrent connections is bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import stat
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hostagent.priority import keep_normal_here, release_here

log = logging.getLogger(__name__)
PEER_PREFIX = "hostagent-admin"
_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


@dataclass(frozen=True)
class PeerCred:
    pid: int
    uid: int
    gid: int


def peer_cred(sock: socket.socket) -> PeerCred:
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCred(pid, uid, gid)


def make_private_dir(parent: Path, prefix: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # mode 0700


class UnixCredProxy:
    def __init__(
        self,
        public_path: Path,
        inner_path: Path,
        server_id: str,
        mode: int = 0o660,
        gid: Optional[int] = None,
        max_connections: int = 64,
    ) -> None:
        self.public_path = public_path
        self.inner_path = inner_path
        self.server_id = server_id
        self.mode = mode
        self.gid = gid
        self.max_connections = max_connections
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._stopping = False
        self._published: Optional[tuple[int, int]] = None  # (st_dev, st_ino) of the socket we put there

    def start(self) -> None:
        staging = make_private_dir(self.public_path.parent, ".admin-staging-")
        staged = staging / "admin.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(staged))
            os.chmod(staged, self.mode)
            if self.gid is not None:
                os.chown(staged, -1, self.gid)
            listener.listen(64)
            self._remove_stale()
            os.rename(staged, self.public_path)
            st = os.lstat(self.public_path)
            self._published = (st.st_dev, st.st_ino)
        except BaseException:
            listener.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                staging.rmdir()
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="admin-uds-accept", daemon=True)
        self._thread.start()

    def _remove_stale(self) -> None:
        """A socket left by a previous run is replaced; any other file is an error."""
        try:
            st = os.lstat(self.public_path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.public_path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(self.public_path))
        except OSError:
            pass  # nobody listens: stale
        else:
            raise FileExistsError(f"{self.public_path}: another agent is already listening there")
        finally:
            probe.close()

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        self._unpublish()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _unpublish(self) -> None:
        """Remove the public socket if it is still the one this proxy put there. A start that was
        refused (the path is another agent's live socket, or not a socket at all: a typo naming
        the config file) removed whatever the path named, as did a stop after another agent
        replaced a stale socket of ours."""
        published, self._published = self._published, None
        if published is None:
            return
        with contextlib.suppress(OSError):
            st = os.lstat(self.public_path)
            if (st.st_dev, st.st_ino) == published:
                os.unlink(self.public_path)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        keep_normal_here("admin-accept")  # an admin thread: SCHED_OTHER at cpu_policy idle too (AdminServer.start)
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                self._serve(client)
            except OSError as exc:
                log.warning("admin socket: dropping a connection: %s", exc)
                client.close()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            if len(self._conns) >= 2 * self.max_connections:
                log.warning("admin socket: %d connections open; refusing another", self.max_connections)
                client.close()
                return
        cred = peer_cred(client)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            name = f"{PEER_PREFIX}/{self.server_id}/{cred.uid}/{cred.gid}/{cred.pid}/{next(self._seq)}"
            upstream.bind("\0" + name)
            upstream.connect(str(self.inner_path))
        except OSError:
            upstream.close()
            raise
        with self._lock:
            self._conns.update((client, upstream))
        pair = _Pair(client, upstream, self._forget)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=pair.relay, args=(src, dst), name="admin-uds-relay", daemon=True).start()

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.difference_update(socks)


class _Pair:
    """One relayed connection: closes both sockets when both directions are done."""

    def __init__(self, a: socket.socket, b: socket.socket, forget: Callable[..., None]) -> None:
        self.a, self.b = a, b
        self._left = 2
        self._lock = threading.Lock()
        self._forget = forget

    def relay(self, src: socket.socket, dst: socket.socket) -> None:
        keep_normal_here("admin-relay")  # started by the accept thread: its policy, kept by later changes too
        try:
            self._copy(src, dst)
        finally:
            release_here()

    def _copy(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        with self._lock:
            self._left -= 1
            done = self._left == 0
        if done:
            self.a.close()
            self.b.close()
            self._forget(self.a, self.b)
