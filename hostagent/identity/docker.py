"""Docker container metadata from the Engine API, kept fresh by the event stream.

Plain HTTP/1.1 over the unix socket with the standard library's ``http.client``, not the
``docker`` SDK: we need two read-only endpoints (``/containers/{id}/json``, ``/events``) and one
optional (``/images/{id}/json``); the SDK would add requests + urllib3 + websocket-client to a
root daemon's dependencies for that, and its streaming helpers hide the reconnect behaviour we
need to control. The Engine API is versioned and stable; we pin nothing and send no version
prefix, so the daemon answers with its current API.

``DockerMetadata`` caches ``ContainerInfo`` per container id. A background thread follows
``/events`` (container start/die/destroy/rename) and refreshes or drops entries, then tells a
listener which container changed (``None`` = "anything may have changed": after a reconnect,
events may have been missed). When Docker is absent or restarts, lookups return None quickly and
the thread retries with exponential backoff, logging once per outage.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/run/docker.sock"
_EVENTS = ("start", "die", "destroy", "rename")


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    name: str  # without Docker's leading "/"
    image_name: str  # repository part of Config.Image, e.g. "nginx" or "ghcr.io/acme/api"
    image_tags: tuple[str, ...] = ()
    image_id: str = ""
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=True)
    env: dict[str, str] = field(default_factory=dict, hash=False, compare=True)  # Config.Env


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerUnavailable(OSError):
    """The engine did not answer (no socket, refused, timeout, 5xx)."""


def split_image(reference: str) -> tuple[str, tuple[str, ...]]:
    """``repo:tag`` / ``host:5000/repo:tag`` / ``repo@sha256:...`` -> (name, tags)."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], (name[colon + 1 :],)
    return name, ()


class DockerClient:
    """The few Engine API calls identity needs. One short-lived connection per request: calls are
    rare (first sight of a container, events), and a fresh connection survives engine restarts."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerUnavailable(str(exc)) from exc
        finally:
            conn.close()
        if response.status == 404:
            return None
        if response.status >= 300:
            raise DockerUnavailable(f"GET {path}: HTTP {response.status}")
        return json.loads(body)

    def ping(self) -> bool:
        try:
            self._get("/_ping")  # returns "OK": json.loads fails -> treat as answered
        except DockerUnavailable:
            return False
        except ValueError:
            return True
        return True

    def inspect(self, container_id: str) -> Optional[ContainerInfo]:
        data = self._get(f"/containers/{urllib.parse.quote(container_id)}/json")
        if not data:
            return None
        config = data.get("Config") or {}
        image_name, tags = split_image(config.get("Image") or "")
        image_id = data.get("Image") or ""
        if not tags and image_id:
            tags = self._tags_of(image_id, image_name)
        env: dict[str, str] = {}
        for item in config.get("Env") or ():
            key, _, value = item.partition("=")
            env[key] = value
        return ContainerInfo(
            id=data.get("Id", container_id),
            name=(data.get("Name") or "").lstrip("/"),
            image_name=image_name,
            image_tags=tags,
            image_id=image_id,
            labels=dict(config.get("Labels") or {}),
            env=env,
        )

    def _tags_of(self, image_id: str, image_name: str) -> tuple[str, ...]:
        """Tags of the image when the container was created without one (``docker run nginx``)."""
        try:
            image = self._get(f"/images/{urllib.parse.quote(image_id)}/json") or {}
        except (DockerUnavailable, ValueError):
            return ()
        tags: list[str] = []
        for repo_tag in image.get("RepoTags") or ():
            name, tag = split_image(repo_tag)
            if tag and (name == image_name or not image_name):
                tags.extend(tag)
        return tuple(tags)

    def events(self) -> http.client.HTTPResponse:
        """Open the container event stream; the caller reads JSON lines and closes it."""
        filters = json.dumps({"type": ["container"], "event": list(_EVENTS)})
        conn = _UnixHTTPConnection(self.socket_path, None)
        try:
            conn.request("GET", "/events?filters=" + urllib.parse.quote(filters))
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise DockerUnavailable(str(exc)) from exc
        if response.status != 200:
            conn.close()
            raise DockerUnavailable(f"GET /events: HTTP {response.status}")
        return response


Listener = Callable[[Optional[str]], None]


class DockerMetadata:
    """Cache of ContainerInfo by id, refreshed by the event stream (see module docstring)."""

    def __init__(
        self,
        client: Optional[DockerClient] = None,
        max_entries: int = 4096,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.client = client or DockerClient()
        self._max = max_entries
        self._cache: dict[str, Optional[ContainerInfo]] = {}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._stream: Optional[http.client.HTTPResponse] = None
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self.connected = threading.Event()  # set while the event stream is open
        self.events_seen = 0

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, container_id: str) -> Optional[ContainerInfo]:
        """Cached info; on a miss one inspect call (first sight of a container only). None when
        Docker does not know the id or is not answering; a failure is not cached, so the next
        process of that container tries again."""
        with self._lock:
            if container_id in self._cache:
                return self._cache[container_id]
        try:
            info = self.client.inspect(container_id)
        except (DockerUnavailable, ValueError):
            return None
        self._store(container_id, info)
        return info

    def _store(self, container_id: str, info: Optional[ContainerInfo]) -> None:
        with self._lock:
            if container_id not in self._cache and len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))  # oldest inserted
            self._cache[container_id] = info

    def _notify(self, container_id: Optional[str]) -> None:
        for listener in list(self._listeners):
            try:
                listener(container_id)
            except Exception:  # a listener bug must not kill the event thread
                log.exception("docker metadata listener failed")

    # --- event stream ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None and stream.fp is not None:
            try:
                # Unblocks the reader thread's readline(); close() alone would not.
                stream.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr,attr-defined]
            except (OSError, AttributeError):
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def handle_event(self, event: dict[str, Any]) -> None:
        """Apply one decoded event (public so it can be tested with captured events)."""
        self.events_seen += 1
        action = event.get("Action") or event.get("status") or ""
        container_id = (event.get("Actor") or {}).get("ID") or event.get("id") or ""
        if not container_id:
            return
        if action == "destroy":
            with self._lock:
                self._cache.pop(container_id, None)
        elif action in ("start", "rename", "die"):
            # die: keep serving the entry (late calls of its processes), but refresh it.
            try:
                info = self.client.inspect(container_id)
            except (DockerUnavailable, ValueError):
                return
            self._store(container_id, info)
        else:
            return
        self._notify(container_id)

    def _run(self) -> None:
        delay = self._backoff_initial
        outage_logged = False
        first = True
        while not self._stop.is_set():
            try:
                self._stream = self.client.events()
            except DockerUnavailable as exc:
                if not outage_logged:
                    log.info("docker engine not answering on %s (%s); retrying in the background",
                             self.client.socket_path, exc)
                    outage_logged = True
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            if outage_logged or not first:
                log.info("docker event stream connected")
                with self._lock:
                    self._cache.clear()  # events were missed: re-inspect on next use
                self._notify(None)
            first = False
            outage_logged = False
            delay = self._backoff_initial
            self.connected.set()
            try:
                self._follow(self._stream)
            finally:
                self.connected.clear()
                self._stream.close()
                self._stream = None

    def _follow(self, stream: http.client.HTTPResponse) -> None:
        while not self._stop.is_set():
            try:
                line = stream.readline()
            except (OSError, http.client.HTTPException, ValueError):
                return
            if not line:
                return  # engine closed the stream (restart/shutdown)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.handle_event(event)
