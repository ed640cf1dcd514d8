"""Real servers on loopback for integration tests: nginx and the Python http_app."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, name: str) -> None:
        self.proc, self.port, self.name = proc, port, name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def assert_port_free(port: int, host: str = "127.0.0.1") -> None:
    """A server left by another run would answer in place of ours: refuse to start instead. With
    SO_REUSEADDR, as the servers bind: a port whose last connection is in TIME_WAIT (the same test
    run again within a minute) is free to listen on, only a listener makes it busy."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise AssertionError(f"{host}:{port} is already in use by another process") from None


def start_http_app(port: int) -> Server:
    assert_port_free(port)
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.http_app", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
    except AssertionError:
        proc.kill()  # a server that never listened must not outlive the failed test
        raise
    return Server(proc, port, "http_app")


def start_grpc_demo(port: int) -> Server:
    """tests/support/grpc_demo's server in a process of its own (start it after the agent, so that
    its accept is seen); wait_port's probe connection sends nothing, so it makes no span."""
    code = f"from tests.support.grpc_demo.service import start_server; start_server({port}).wait_for_termination()"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        wait_port(port)
    except AssertionError:
        proc.kill()
        raise
    return Server(proc, port, "grpc_demo")


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    keepalive_requests 100000;
    sendfile {sendfile};
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location /missing {{ return 404; }}
    }}
}}
"""


def start_nginx(root: Path, port: int, body: Optional[bytes] = None, sendfile: bool = False) -> Server:
    """nginx in the foreground, one process (master_process off), so its pid is the server's.
    ``sendfile``: files go out by sendfile(2) (size-only events), not read + write."""
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "www" / "index.html").write_bytes(body if body is not None else b"<h1>hello</h1>\n")
    assert_port_free(port)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port, sendfile="on" if sendfile else "off"))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(root)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port)
    return Server(proc, port, "nginx")
