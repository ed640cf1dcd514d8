"""A small HTTP/1.1 server (keep-alive) for tests: run as ``python -m tests.support.http_app PORT``.

Paths: ``/sleep?ms=N`` answers after N ms (so span durations can be checked), ``/status/N``
answers with status N, ``/echo`` returns the request body, anything else 200 "ok".
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/sleep":
            ms = int(parse_qs(url.query).get("ms", ["100"])[0])
            time.sleep(ms / 1000)
            self._answer(200, b"slept")
        elif url.path.startswith("/status/"):
            self._answer(int(url.path.rsplit("/", 1)[1]), b"status")
        else:
            self._answer(200, b"ok")

    do_HEAD = do_GET
    do_DELETE = do_GET  # answers like GET; tests use it to tell their calls apart

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self._answer(201 if self.path.startswith("/create") else 200, body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


def main() -> None:
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
