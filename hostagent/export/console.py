"""ConsoleExporter: one human-readable line per span, like ``tail -f`` of the host's traffic.

    23:41:07.123  nginx          SERVER http  GET /index.html?x=1        200   0.4 ms

Columns: local time of the call's start, service, kind, protocol, what was asked (method and
path, statement summary, RPC method, DNS question; else the span name), the protocol's status
code (or ERR/-), duration. The protocol is inferred from the semantic-convention attributes
because a ReadableSpan does not carry the Call.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

_MAX_WHAT = 120  # keep one span on one terminal line, more or less


def _protocol(attrs: Mapping[str, Any]) -> str:
    if "rpc.system" in attrs or "rpc.system.name" in attrs:
        return str(attrs.get("rpc.system.name", attrs.get("rpc.system")))
    if "db.system.name" in attrs or "db.system" in attrs:
        return str(attrs.get("db.system.name", attrs.get("db.system")))
    if "dns.question.name" in attrs:
        return "dns"
    if "http.request.method" in attrs:
        return "http"
    return "-"


def _what(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    method = attrs.get("http.request.method")
    if method is not None:
        target = attrs.get("url.path")
        if target is not None:
            query = attrs.get("url.query")
            target = f"{target}?{query}" if query else str(target)
        else:
            target = attrs.get("url.full")
        if target is not None:
            return f"{method} {target}"
    for key in ("db.query.summary", "db.query.text", "dns.question.name"):
        value = attrs.get(key)
        if value:
            return " ".join(str(value).split())  # one line, whatever the statement looked like
    return span.name


def _status(span: ReadableSpan, attrs: Mapping[str, Any]) -> str:
    for key in (
        "http.response.status_code",
        "rpc.grpc.status_code",
        "rpc.response.status_code",
        "db.response.status_code",
        "dns.response_code",
    ):
        value = attrs.get(key)
        if value is not None:
            return str(value)
    if span.status.status_code == StatusCode.ERROR:
        return "ERR"
    return "-"


def _clock(unix_ns: int, utc: bool) -> str:
    seconds, rest = divmod(unix_ns, 1_000_000_000)
    parts = time.gmtime(seconds) if utc else time.localtime(seconds)
    return f"{time.strftime('%H:%M:%S', parts)}.{rest // 1_000_000:03d}"


def format_span(span: ReadableSpan, utc: bool = False) -> str:
    """The console line for one span (no trailing newline)."""
    attrs = span.attributes or {}
    service = str(span.resource.attributes.get("service.name", "-"))
    kind = {SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT"}.get(span.kind, "INTERN")
    start = span.start_time or 0
    end = span.end_time or start
    what = _what(span, attrs)
    if len(what) > _MAX_WHAT:
        what = what[: _MAX_WHAT - 3] + "..."
    duration_ms = (end - start) / 1e6
    return (
        f"{_clock(start, utc)}  {service:<14} {kind:<6} {_protocol(attrs):<5} "
        f"{what:<26} {_status(span, attrs):<3} {duration_ms:5.1f} ms"
    )


class ConsoleExporter(SpanExporter):
    """Writes ``format_span`` lines to ``stream`` (stdout by default), flushing per batch."""

    def __init__(self, stream: Optional[TextIO] = None, utc: bool = False) -> None:
        self._stream = stream
        self._utc = utc
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        stream = self._stream if self._stream is not None else sys.stdout
        text = "".join(format_span(span, self._utc) + "\n" for span in spans)
        try:
            with self._lock:
                stream.write(text)
                stream.flush()
        except (OSError, ValueError):  # closed pipe / closed file: the reader went away
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
