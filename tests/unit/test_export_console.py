"""ConsoleExporter: one aligned line per span, flushed per batch."""

from __future__ import annotations

import io
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode

from hostagent.export.console import ConsoleExporter, format_span

# 2023-11-14 23:41:07.123 UTC
START = 1_700_005_267_123_000_000


def span(attrs: dict[str, Any], kind: SpanKind = SpanKind.SERVER, **kw: Any) -> ReadableSpan:
    return ReadableSpan(
        name=kw.pop("name", "GET"),
        context=SpanContext(1, 2, is_remote=False),
        resource=Resource({"service.name": kw.pop("service", "nginx")}),
        attributes=attrs,
        kind=kind,
        start_time=START,
        end_time=START + kw.pop("duration_ns", 400_000),
        status=kw.pop("status", Status(StatusCode.UNSET)),
    )


@pytest.mark.parametrize(
    ("s", "line"),
    [
        (
            span(
                {
                    "http.request.method": "GET",
                    "url.path": "/index.html",
                    "url.query": "x=1",
                    "http.response.status_code": 200,
                }
            ),
            "23:41:07.123  nginx          SERVER http  GET /index.html?x=1        200   0.4 ms",
        ),
        (
            span(
                {
                    "http.request.method": "POST",
                    "url.full": "http://127.0.0.1:8080/api",
                    "http.response.status_code": 503,
                },
                SpanKind.CLIENT,
                service="curl",
                duration_ns=12_345_678,
            ),
            "23:41:07.123  curl           CLIENT http  POST http://127.0.0.1:8080/api 503  12.3 ms",
        ),
        (
            span(
                {"db.system.name": "postgresql", "db.query.summary": "SELECT orders"},
                SpanKind.CLIENT,
                service="app",
                name="SELECT orders",
                duration_ns=1_500_000,
            ),
            "23:41:07.123  app            CLIENT postgresql SELECT orders              -     1.5 ms",
        ),
        (
            span(
                {"db.system.name": "redis", "db.query.text": "GET\n  key"},
                SpanKind.CLIENT,
                service="app",
                name="GET",
                status=Status(StatusCode.ERROR, "x"),
            ),
            "23:41:07.123  app            CLIENT redis GET key                    ERR   0.4 ms",
        ),
        (
            span({"rpc.system": "grpc", "rpc.grpc.status_code": 0}, name="helloworld.Greeter/SayHello"),
            "23:41:07.123  nginx          SERVER grpc  helloworld.Greeter/SayHello 0     0.4 ms",
        ),
        (
            span({}, SpanKind.INTERNAL, name="mystery"),
            "23:41:07.123  nginx          INTERN -     mystery                    -     0.4 ms",
        ),
    ],
)
def test_line_format(s: ReadableSpan, line: str) -> None:
    assert format_span(s, utc=True) == line


def test_long_target_is_cut() -> None:
    s = span({"http.request.method": "GET", "url.path": "/" + "a" * 500})
    what = format_span(s, utc=True).split("http  ", 1)[1]
    assert what.startswith("GET /aaa") and "..." in what and len(what) < 150


def test_export_writes_and_flushes_one_line_per_span() -> None:
    class Stream(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            Stream.flushes += 1

    out = Stream()
    exporter = ConsoleExporter(out, utc=True)
    spans = [span({"http.request.method": "GET", "url.path": f"/{i}"}) for i in range(3)]
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    lines = out.getvalue().splitlines()
    assert [line.split()[5] for line in lines] == ["/0", "/1", "/2"]
    assert Stream.flushes == 1


def test_closed_stream_is_a_failure_not_a_crash() -> None:
    out = io.StringIO()
    out.close()
    assert ConsoleExporter(out).export([span({})]) == SpanExportResult.FAILURE
