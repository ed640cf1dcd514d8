"""Record the HTTP/2 fixtures from real traffic on loopback (run from the repository root).

    .venv/bin/python -m tests.support.grpc_demo.record tests/fixtures/http2 [fixture name...]

- grpc_shapes.json: one grpcio channel: Unary, ServerStream(3), ClientStream(3), Bidi(2),
  Fail(UNAVAILABLE), Fail(NOT_FOUND) - all on one HTTP/2 connection.
- grpc_concurrent.json: 20 unary calls in flight at once on one channel.
- grpc_cancel.json: a Bidi call the client cancels after the first reply (RST_STREAM CANCEL).
- grpc_deadline.json: a unary call whose 100 ms deadline (grpc-timeout) passes before the reply.
- grpc_binary_metadata.json: Fail(NOT_FOUND) with binary metadata both ways (``-bin`` headers):
  both peers allow "true binary" metadata (SETTINGS 0xFE03), so both send NUL + raw bytes.
- grpc_binary_metadata_base64.json: the same from a channel that does not allow true binary
  (``grpc.http2.true_binary`` 0): the client still sends true binary, the server base64.
- grpc_big.json: a Unary call of 20 KB each way, then a small one (run_big_then_small).
- curl_nginx.json: curl --http2-prior-knowledge against nginx (h2c, `listen ... http2`), three
  requests (one connection each: curl 7.88 cannot reuse a prior-knowledge connection).
Ports: from tests.support.ports (the server, nginx and each relay).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.grpc_demo.service import (
    run_big_then_small,
    run_binary_metadata,
    run_cancelled_bidi,
    run_concurrent_unary,
    run_deadline_exceeded,
    run_every_shape,
    start_server,
    stub_for,
)
from tests.support.h2_recorder import Recorder
from tests.support.ports import free_port

GRPC_PORT, GRPC_RELAY = free_port(), free_port()
NGINX_PORT, NGINX_RELAY = free_port(), free_port()

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  server {{
    listen 127.0.0.1:{port} http2;
    root {d}/www;
    location = /hello {{ return 200 "hello\\n"; }}
  }}
}}
"""


GRPC_SCENARIOS = {
    "grpc_shapes": run_every_shape,
    "grpc_concurrent": run_concurrent_unary,
    "grpc_cancel": run_cancelled_bidi,
    "grpc_deadline": run_deadline_exceeded,
    "grpc_binary_metadata": run_binary_metadata,
    "grpc_binary_metadata_base64": run_binary_metadata,
    "grpc_big": run_big_then_small,
}
CHANNEL_OPTIONS = {"grpc_binary_metadata_base64": (("grpc.http2.true_binary", 0),)}


def record_grpc(out: Path, names: list[str]) -> None:
    server = start_server(GRPC_PORT)
    try:
        for name in names:
            scenario = GRPC_SCENARIOS[name]
            rec = Recorder(GRPC_RELAY, GRPC_PORT).start()
            channel, stub = stub_for(GRPC_RELAY, CHANNEL_OPTIONS.get(name, ()))
            scenario(stub)
            time.sleep(0.2)
            channel.close()
            time.sleep(0.3)
            rec.stop()
            rec.save(out / f"{name}.json", f"grpcio {scenario.__name__} via tests.support.h2_recorder")
            time.sleep(0.2)
    finally:
        server.stop(0)


def record_curl_nginx(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hostagent-nginx-") as d:
        (Path(d) / "www").mkdir()
        (Path(d) / "www" / "index.html").write_text("<h1>hostagent</h1>\n")
        conf = Path(d) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=d, port=NGINX_PORT))
        nginx = subprocess.Popen(["nginx", "-p", d, "-c", str(conf)])
        try:
            time.sleep(0.5)
            rec = Recorder(NGINX_RELAY, NGINX_PORT).start()
            base = f"http://127.0.0.1:{NGINX_RELAY}"
            # One curl per URL: curl 7.88 fails (exit 16) when it reuses a prior-knowledge h2c
            # connection for a second URL, so each request has its own connection.
            for url in (f"{base}/index.html?lang=en", f"{base}/missing", f"{base}/hello"):
                subprocess.run(
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "--http2-prior-knowledge",
                        "-H",
                        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                        url,
                    ],
                    check=True,
                )
            time.sleep(0.3)
            rec.stop()
            rec.save(out / "curl_nginx.json", "curl 7.88 --http2-prior-knowledge -> nginx 1.22 listen http2")
        finally:
            nginx.terminate()
            nginx.wait(5)


def main() -> None:
    """Records every fixture, or only those named after the directory."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/http2")
    names = sys.argv[2:] or [*GRPC_SCENARIOS, "curl_nginx"]
    record_grpc(out, [n for n in names if n in GRPC_SCENARIOS])
    if "curl_nginx" in names:
        record_curl_nginx(out)


if __name__ == "__main__":
    main()
