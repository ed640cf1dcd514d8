"""OtlpTraceEncoder writes the same ExportTraceServiceRequest as the SDK's encoder.

Both outputs are parsed with the official generated classes and compared as messages, so any
field the hand encoder got wrong (tag, wire type, varint, grouping) fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from hostagent.export.otlp_fast import OtlpTraceEncoder, _varint
from hostagent.identity.procfs import ProcFS
from hostagent.identity.resource import HostInfo
from hostagent.identity.service import ServiceCache
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.traces.record import SpanRecord
from hostagent.traces.spans import SpanBuilder

RES_A = Resource({"service.name": "nginx", "process.pid": 42, "host.name": "h"})
RES_B = Resource({"service.name": "wrk", "process.command_args": ("wrk", "-c", "8")}, schema_url="https://x/s")
SCOPE = InstrumentationScope("hostagent", "0.1.0")


def record_of(span: ReadableSpan) -> SpanRecord:
    """``span`` as the agent's SpanRecord (its parent's flags and state are the span's own there,
    which no encoder writes)."""
    ctx, parent = span.context, span.parent
    record = SpanRecord(span.name, ctx.trace_id, ctx.span_id, ctx.trace_flags, ctx.trace_state,
                        parent.span_id if parent is not None else 0, parent is not None and parent.is_remote,
                        span.resource, dict(span.attributes or {}), span.kind, span.kind.value + 1, span.status,
                        span.start_time or 0, span.end_time or 0, span.instrumentation_scope)  # type: ignore[arg-type]
    record.events, record.links = tuple(span.events), tuple(span.links)
    return record


def same(spans: list[ReadableSpan], encoder: OtlpTraceEncoder | None = None) -> None:
    """Our encoding of ``spans`` is the SDK encoder's message; as SpanRecords, they encode to the
    same bytes with ours and to the same message with the SDK's (the OTLP/HTTP path)."""
    enc = encoder or OtlpTraceEncoder()
    ours_bytes = enc.encode(spans)
    ours = ExportTraceServiceRequest.FromString(ours_bytes)
    theirs = ExportTraceServiceRequest.FromString(sdk_encode(spans).SerializeToString())
    assert ours == theirs, f"\nours:\n{ours}\ntheirs:\n{theirs}"
    if all(s.__class__ is ReadableSpan for s in spans):
        records = [record_of(s) for s in spans]
        rec_enc = OtlpTraceEncoder()
        assert rec_enc.encode(records) == ours_bytes
        assert rec_enc.encode(records) == ours_bytes  # from its caches
        mixed = [r if i % 2 else s for i, (s, r) in enumerate(zip(spans, records))]
        assert rec_enc.encode(mixed) == ours_bytes
        assert ExportTraceServiceRequest.FromString(sdk_encode(records).SerializeToString()) == theirs  # type: ignore[arg-type]


def span(name: str = "GET /", attrs: dict | None = None, resource: Resource = RES_A, **kw: object) -> ReadableSpan:
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=False,
                      trace_flags=TraceFlags(1), trace_state=kw.pop("trace_state", TraceState()))  # type: ignore[arg-type]
    return ReadableSpan(name=name, context=ctx, resource=resource, attributes=attrs or {},
                        kind=kw.pop("kind", SpanKind.SERVER), start_time=1_700_000_000_000_000_000,  # type: ignore[arg-type]
                        end_time=1_700_000_000_001_000_000,
                        instrumentation_scope=kw.pop("instrumentation_scope", SCOPE), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("attrs", [
    {},
    {"http.request.method": "GET", "url.path": "/index.html", "server.port": 18901},  # str, int
    {"http.response.status_code": 200, "flag": True, "off": False, "ratio": 0.25, "neg": -5},  # bool, double, int64<0
    {"hostagent.pii.types": ("email", "card"), "ports": (1, 2, 3), "bools": (True, False)},  # arrays
    {"big": 2**62, "unicode": "caf\u00e9 \u2713", "empty": ""},  # multi-byte varint, UTF-8, empty string
])
def test_attribute_types(attrs: dict) -> None:
    same([span(attrs=attrs)])


@pytest.mark.parametrize("kind", list(SpanKind))
def test_kinds(kind: SpanKind) -> None:
    same([span(kind=kind)])


def test_status_parent_tracestate_events_links() -> None:
    parent = SpanContext(0x1, 0x2, is_remote=True, trace_flags=TraceFlags(1))
    local_parent = SpanContext(0x1, 0x3, is_remote=False)
    same([
        span(status=Status(StatusCode.ERROR, "500"), parent=parent,
             trace_state=TraceState([("vendor", "v1"), ("b", "2")])),
        span(status=Status(StatusCode.OK), parent=local_parent),
        span(events=(Event("e1", {"a": 1}, timestamp=5), Event("e2", timestamp=6)),
             links=(Link(parent, {"l": "x"}), Link(local_parent))),
    ])


def test_grouping_by_resource_and_cache_reuse() -> None:
    enc = OtlpTraceEncoder()
    batch = [span("a", {"k": "v"}), span("b", {"k": "v"}, RES_B), span("c", {"k": 1}), span("d", {"k": True}, RES_B)]
    same(batch, enc)
    same(batch[::-1], enc)  # the caches must not change a later batch's result


@pytest.mark.parametrize(
    "values",
    [
        (1, True, "1", 1.0),  # equal as dict keys, four different encodings (int, bool, string, double)
        (True, 1, 1.0, "1"),  # the same, a bool cached first
        ("x", ("x",), "x"),  # a string and a one-string array under one key
        (("1",), (1,), (True,), (1.0,), ("1",)),  # equal-looking arrays: only the all-string one cached by value
        ((True,), (1,), ("1",), ("x", 1), ("x", "y")),
    ],
)
def test_one_key_with_values_of_several_types(values: tuple) -> None:
    enc = OtlpTraceEncoder()
    batch = [span(f"s{i}", {"k": v}) for i, v in enumerate(values)]
    same(batch, enc)
    same(batch, enc)  # second time from the caches


def test_string_arrays_are_cached_by_value() -> None:
    # the parser's response headers: a one-string tuple per header, a new tuple per span
    enc = OtlpTraceEncoder()
    same([span("a", {"h": ("text/html",), "n": (1,)})], enc)
    assert enc._simple["h"].values[("text/html",)] == enc.attribute("h", ("text/html",))
    assert "n" not in enc._simple  # an int array stays with the typed cache: (1,) == (True,)


def test_scopes_with_schema_urls_and_resources_interleaved() -> None:
    other = InstrumentationScope("other", "2", schema_url="https://x/scope")
    batch = [span("a", {"k": "v"}), span("b", {"k": "v"}, RES_B, instrumentation_scope=other),
             span("c", {"k": 1}, instrumentation_scope=other), span("d", {"k": "w" * 300}, RES_B),
             span("e", {"k": "v"})]
    same(batch)


def test_spans_from_the_span_builder() -> None:
    # pid 100 of the fixture host tree is nginx.service
    conn = Connection(pid=100, tid=100, fd=3, peer=Endpoint("127.0.0.1", 40000), transport="tcp", comm="nginx")
    call = Call(protocol="http", role=Role.SERVER, start_ns=10, end_ns=20, name="GET /x",
                attributes={"http.request.method": "GET", "url.path": "/x", "http.response.status_code": 404},
                error_type="404", traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                conn=conn)
    host = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
    tree = Path(__file__).resolve().parents[1] / "fixtures" / "proc" / "host"
    cache = ServiceCache(ProcFS(str(tree)), host_info=host)
    builder = SpanBuilder(resource_for=cache.resource_of)  # one Resource object per process, as in the agent
    records = [builder.build(call), builder.build(Call(protocol="http", role=Role.CLIENT, start_ns=1, end_ns=2,
                                                       name="GET", conn=conn))]
    assert all(type(r) is SpanRecord for r in records)
    same(records)
    # the ReadableSpans the builder made before: the same bytes
    twins = [ReadableSpan(name=r.name, context=r.context, parent=r.parent, resource=r.resource,
                          attributes=dict(r.attributes or {}), kind=r.kind, status=r.status, start_time=r.start_time,
                          end_time=r.end_time, instrumentation_scope=r.instrumentation_scope) for r in records]
    assert OtlpTraceEncoder().encode(records) == OtlpTraceEncoder().encode(twins)
    same(twins)


@pytest.mark.parametrize("n, encoded", [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"),
                                        (300, b"\xac\x02"), (-1, b"\xff" * 9 + b"\x01")])
def test_varint(n: int, encoded: bytes) -> None:
    assert _varint(n) == encoded


_values = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=False), st.lists(st.text(max_size=5), max_size=3).map(tuple))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), _values, max_size=8), st.text(max_size=30))
def test_any_attributes_match_the_sdk(attrs: dict, name: str) -> None:
    same([span(name, attrs)])


class CountingPause:
    """Stands in for hostagent.yielding.CpuYield: counts starts and pauses."""

    def __init__(self) -> None:
        self.starts = 0
        self.pauses = 0

    def start(self) -> None:
        self.starts += 1

    def __call__(self) -> None:
        self.pauses += 1


@pytest.mark.parametrize("n, pauses", [(0, 0), (63, 0), (64, 1), (200, 3)])
def test_a_long_batch_pauses_every_64_spans_and_encodes_the_same(n: int, pauses: int) -> None:
    pause = CountingPause()
    batch = [span(f"s{i}", {"i": i}, RES_B if i % 3 else RES_A) for i in range(n)]
    same(batch, OtlpTraceEncoder(pause=pause))
    assert (pause.starts, pause.pauses) == (1, pauses)


def test_an_unhashable_array_under_a_key_cached_before() -> None:
    # a key whose string array is cached, then an array with a list inside under it: encoded, not a
    # TypeError from the by-value lookup (main raised it out of encode, failing the whole batch)
    enc = OtlpTraceEncoder()
    same([span("a", {"h": ("text/html",)})], enc)
    same([span("b", {"h": ("x", ["y"])}), span("c", {"h": ("text/html",)})], enc)  # type: ignore[dict-item]


def test_the_same_value_objects_span_after_span() -> None:
    # the wire stage hands on one header tuple per distinct head: found as the key's last value by
    # identity; an equal value of another object, another value, and back, all encode as the SDK's
    shared, other = ("text/html",), ("text/plain",)
    enc = OtlpTraceEncoder()
    batch = [span(f"s{i}", {"h": v, "n": 200, "m": "GET"})
             for i, v in enumerate([shared, shared, ("text/html",), other, shared, ("x", 1), shared])]
    same(batch, enc)
    same(batch, enc)


class CountedState(TraceState):
    """An empty TraceState that counts how often its truth is asked (an interpreted ``__len__``)."""

    lens = 0

    def __len__(self) -> int:
        CountedState.lens += 1
        return super().__len__()


def test_an_empty_trace_state_is_asked_once() -> None:
    state = CountedState()
    batch = [span(f"s{i}", {"i": i}, trace_state=state) for i in range(50)]
    records = [record_of(s) for s in batch]
    enc = OtlpTraceEncoder()
    CountedState.lens = 0
    enc.encode(records)
    enc.encode(batch)
    assert CountedState.lens == 1
    same(batch)
