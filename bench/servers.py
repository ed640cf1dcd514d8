"""Servers under test, pinned to the server CPU: nginx (static file) and Flask under gunicorn
(one sync worker), plain or under OpenTelemetry zero-code instrumentation."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from bench.procs import pinned, stop
from tests.support.servers import NGINX_CONF, wait_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


# nginx's stub_status on a port of its own: the requests nginx read, counted by nginx itself. The
# fidelity's expected spans come from it, since wrk counts only the requests it saw answered
# within its duration, not those in flight when it stopped (traced all the same: spans above
# 100% before, which could hide as many lost).
NGINX_STATUS_SERVER = """
    server {{
        listen 127.0.0.1:{status_port};
        location = /status {{ stub_status; }}
    }}
"""


def stub_status_requests(body: str) -> int:
    """The "requests" counter of an nginx stub_status page:
    ``Active connections: 2 \nserver accepts handled requests\n 9 9 1234 \nReading: ...``."""
    lines = body.splitlines()
    if len(lines) < 3 or lines[1].split() != ["server", "accepts", "handled", "requests"]:
        raise ValueError(f"not an nginx stub_status page: {body[:200]!r}")
    return int(lines[2].split()[2])


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, name: str, status_port: int = 0) -> None:
        self.proc, self.port, self.name = proc, port, name
        self.status_port = status_port

    def requests_read(self) -> int:
        """nginx's count of the requests it has read (stub_status), this read included."""
        conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=10)
        try:
            conn.request("GET", "/status")
            resp = conn.getresponse()
            body = resp.read().decode()
            if resp.status != 200:
                raise RuntimeError(f"nginx stub_status answered {resp.status}: {body[:200]}")
        finally:
            conn.close()
        return stub_status_requests(body)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def nginx(root: Path, port: int, cpus: Optional[str], status_port: int = 0) -> Proc:
    """One nginx process (master_process off), keep-alive, a 15-byte static file; with
    ``status_port``, its stub_status there (``Proc.requests_read``)."""
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "www" / "index.html").write_bytes(b"<h1>hello</h1>\n")
    conf = NGINX_CONF.format(root=root, port=port, sendfile="off")
    if status_port:
        head, _, tail = conf.rpartition("}")  # into the http block
        conf = head + NGINX_STATUS_SERVER.format(status_port=status_port) + "}" + tail
    (root / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(pinned(["nginx", "-c", str(root / "nginx.conf"), "-p", str(root)], cpus),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    if status_port:
        wait_port(status_port)
    return Proc(proc, port, "nginx", status_port)


def gunicorn(port: int, cpus: Optional[str], otel_endpoint: Optional[str] = None) -> Proc:
    """Flask under gunicorn, one sync worker. With ``otel_endpoint``: opentelemetry-instrument
    (zero-code) exporting spans over OTLP/gRPC to it, metrics and logs off."""
    cmd = [str(VENV_BIN / "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}",
           "--log-level", "warning", "bench.flask_app:app"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if otel_endpoint:
        cmd = [str(VENV_BIN / "opentelemetry-instrument"), "--traces_exporter", "otlp",
               "--metrics_exporter", "none", "--logs_exporter", "none", "--service_name", "bench-flask", *cmd]
        env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": otel_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                    "OTEL_EXPORTER_OTLP_INSECURE": "true"})
    proc = subprocess.Popen(pinned(cmd, cpus), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, timeout=30)
    return Proc(proc, port, "gunicorn")
