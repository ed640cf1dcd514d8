"""A real Docker engine for tests: use the running one, or start dockerd and stop it afterwards.

``docker_engine`` (session fixture) yields a ``DockerEngine``. If /var/run/docker.sock answers,
that engine is used and left alone. Otherwise dockerd is started the way ENVIRONMENT.md says
(``--iptables=false --bridge=none``: no docker0 bridge, so no container gets a private-range
address) and stopped, by its PID, at the end of the session. A file lock serialises the start so
two test processes on one machine do not both launch a daemon.

There is no registry here: ``ensure_busybox_image`` imports a busybox rootfs as an image.
Containers must use ``--network host`` (or ``none``) so that traffic stays on loopback.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from hostagent.identity.docker import DockerClient, DockerUnavailable

SOCKET = "/var/run/docker.sock"
IMAGE = "hostagent-bb:latest"
_LOCK = "/tmp/hostagent-dockerd.lock"


class DockerEngine:
    """``private_dir`` set: a separate engine of our own (socket, data and exec roots, pidfile in
    that directory) that other tests and helpers never see -- for tests that stop and restart it."""

    def __init__(self, socket_path: str = SOCKET, private_dir: Optional[str] = None) -> None:
        self.private_dir = private_dir
        if private_dir is not None:
            socket_path = os.path.join(private_dir, "docker.sock")
        self.socket_path = socket_path
        self.started_pid: Optional[int] = None
        self.log_path = ""

    def _dockerd_args(self) -> list[str]:
        args = ["--iptables=false", "--bridge=none", "-H", f"unix://{self.socket_path}"]
        if self.private_dir is not None:
            root = self.private_dir
            args += [
                "--data-root",
                os.path.join(root, "data"),
                "--exec-root",
                os.path.join(root, "exec"),
                "--pidfile",
                os.path.join(root, "docker.pid"),
            ]
        return args

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket_path}")
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def answers(self) -> bool:
        try:
            self.cli("info", "--format", "{{.ServerVersion}}", timeout=10)
        except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError):
            return False
        return True

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd unless an engine already answers."""
        lock_path = _LOCK if self.private_dir is None else os.path.join(self.private_dir, "start.lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.answers():
                return
            dockerd = shutil.which("dockerd")
            if dockerd is None:
                pytest.skip("dockerd is not installed")
            handle = tempfile.NamedTemporaryFile(prefix="dockerd-", suffix=".log", delete=False)
            self.log_path = handle.name
            proc = subprocess.Popen(
                [dockerd, *self._dockerd_args()],
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.started_pid = proc.pid
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"dockerd exited with {proc.returncode}; log: {self.log_path}")
                if self.answers():
                    return
                time.sleep(0.5)
            raise RuntimeError(f"dockerd did not answer within {timeout}s; log: {self.log_path}")

    def stop(self) -> None:
        """Stop dockerd only if this object started it (by PID)."""
        if self.started_pid is None:
            return
        try:
            os.kill(self.started_pid, signal.SIGTERM)
        except ProcessLookupError:
            self.started_pid = None
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                waited, _ = os.waitpid(self.started_pid, os.WNOHANG)
            except ChildProcessError:
                waited = self.started_pid
            if waited:
                break
            time.sleep(0.2)
        else:
            os.kill(self.started_pid, signal.SIGKILL)
        self.started_pid = None

    def ensure_busybox_image(self, image: str = IMAGE) -> str:
        if self.cli("images", "-q", image):
            return image
        busybox = shutil.which("busybox") or "/bin/busybox"
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "bin"))
            shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
            for applet in ("sh", "httpd", "sleep", "wget"):
                os.symlink("busybox", os.path.join(root, "bin", applet))
            tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
            env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket_path}")
            subprocess.run(
                ["docker", "import", "-", image],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
                env=env,
                timeout=120,
            )
            tar.wait()
        return image

    def container_pid(self, name: str) -> int:
        return int(self.cli("inspect", "--format", "{{.State.Pid}}", name))

    def container_id(self, name: str) -> str:
        return self.cli("inspect", "--format", "{{.Id}}", name)

    def remove(self, *names: str) -> None:
        """Remove containers this test created (by the names it gave them)."""
        for name in names:
            self.cli("rm", "-f", name, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    if os.geteuid() != 0:
        pytest.skip("the Docker engine needs root")
    engine = DockerEngine()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


class ReplayDockerClient(DockerClient):
    """Stand-in for the Engine API in *unit* tests (the real engine needs root; integration tests
    use it): replays JSON that the real dockerd here answered, saved under
    tests/fixtures/proc/docker/ (inspect-*.json, image-*.json). Only the transport is replaced;
    the response parsing under test is the real client's."""

    def __init__(self, directory: str, available: bool = True) -> None:
        super().__init__(socket_path=os.path.join(directory, "no-such.sock"))
        self.directory = directory
        self.available = available
        self.requests: list[str] = []
        self.renamed: dict[str, str] = {}  # container id -> new name, to replay a rename

    def _get(self, path: str) -> Any:
        self.requests.append(path)
        if not self.available:
            raise DockerUnavailable("replay: engine down")
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(self.directory, name)) as handle:
                data = json.load(handle)
            ident = data.get("Id", "")
            if path in (f"/containers/{ident}/json", f"/images/{ident}/json"):
                if ident in self.renamed:
                    data["Name"] = "/" + self.renamed[ident]
                return data
        return None
