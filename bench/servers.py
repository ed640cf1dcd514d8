"""Servers under test, pinned to the server CPU: nginx (static file) and Flask under gunicorn
(one sync worker), plain or under OpenTelemetry zero-code instrumentation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from bench.procs import pinned, stop
from tests.support.servers import NGINX_CONF, wait_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, name: str) -> None:
        self.proc, self.port, self.name = proc, port, name

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def nginx(root: Path, port: int, cpus: Optional[str]) -> Proc:
    """One nginx process (master_process off), keep-alive, a 15-byte static file."""
    (root / "www").mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    (root / "www" / "index.html").write_bytes(b"<h1>hello</h1>\n")
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port, sendfile="off"))
    proc = subprocess.Popen(pinned(["nginx", "-c", str(conf), "-p", str(root)], cpus),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return Proc(proc, port, "nginx")


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
