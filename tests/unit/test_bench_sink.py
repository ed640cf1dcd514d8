"""bench/otlp_sink.py counts exactly what a full decode counts, without decoding the spans.

The reference (``old_counts``) is the receiver's method before the twenty-seventh round, as it was:
the request decoded with the generated classes, every span's attributes walked, the first
server.port compared as an int. The batches come from both encoders the bench's receivers see: the
agent's (hostagent.export.otlp_fast, spans made by its SpanBuilder or as ReadableSpans, and two
requests the agent sent, recorded) and the OpenTelemetry SDK's (the OTLP exporter's encode_spans,
serialised as its gRPC stub does: what opentelemetry-instrument's Flask sends).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

import bench.otlp_sink as sink
import bench.sink_proc as sink_proc
from bench.otlp_sink import Counter, count_port, count_spans, full_counts, port_field
from hostagent.export.otlp_fast import OtlpTraceEncoder
from hostagent.identity.procfs import ProcFS
from hostagent.identity.resource import HostInfo
from hostagent.identity.service import ServiceCache
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.traces.spans import SpanBuilder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# one-, two- and three-byte varints (< 128, < 16,384, above)
PORTS = (80, 443, 8080, 16383, 16384, 22010, 65535)


def old_counts(raw: bytes, server_port: int) -> int:
    """bench/otlp_sink.Counter.export before the twenty-seventh round."""
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
    if not server_port:
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)

    def ours(span: Any) -> bool:
        for kv in span.attributes:
            if kv.key == "server.port":
                return bool(kv.value.int_value == server_port)
        return False

    return sum(1 for rs in req.resource_spans for ss in rs.scope_spans for sp in ss.spans if ours(sp))


def agree(raw: bytes, ports: tuple[int, ...] = PORTS) -> dict[int, int]:
    """The new counts are the old ones for every port; returns port -> spans counted."""
    assert count_spans(raw) == old_counts(raw, 0)
    out = {}
    for port in ports:
        n = count_port(raw, port_field(port))
        assert n == old_counts(raw, port), port
        assert full_counts(raw, port) == (old_counts(raw, 0), n)
        out[port] = n
    return out


def both_encoders(spans: list[ReadableSpan]) -> list[bytes]:
    return [OtlpTraceEncoder().encode(spans), sdk_encode(spans).SerializeToString()]


RES = Resource({"service.name": "gunicorn", "process.pid": 7, "server.port": 22010})  # the pair in a Resource
RES_B = Resource({"service.name": "wrk"})
SCOPE = InstrumentationScope("hostagent", "0.1.0", attributes={"server.port": 8080})  # and in a scope
N = 0


def span(attrs: dict[str, Any], resource: Resource = RES, **kw: Any) -> ReadableSpan:
    global N
    N += 1
    ctx = SpanContext(0x0AF7651916CD43DD8448EB211C80319C + N, 0xB7AD6B7169203331 + N, is_remote=False,
                      trace_flags=TraceFlags(1))
    return ReadableSpan(name="GET /work", context=ctx, resource=resource, attributes=attrs, kind=SpanKind.SERVER,
                        start_time=1_796_646_635_373_075_860, end_time=1_796_646_635_376_581_478,
                        instrumentation_scope=kw.pop("scope", SCOPE), **kw)


def mixed_batch() -> list[ReadableSpan]:
    link_ctx = SpanContext(0x1, 0x2, is_remote=True)
    http = {"http.request.method": "GET", "url.path": "/work", "network.peer.port": 22010}
    return [
        *[span({**http, "server.port": p, "http.response.status_code": 200}) for p in PORTS],
        span({**http, "server.port": 22010}, RES_B),
        span({**http, "server.port": 22010}, scope=InstrumentationScope("other")),
        span(http),  # no server.port (its network.peer.port is the port)
        span({}),  # no attributes at all
        span({"server.port": "22010"}),  # a string: not the int port (the old walk read int_value 0)
        span({"server.port": 22010.0}),  # a double
        span({"server.port": True}),
        span({"server.port": (22010,)}),  # an array holding it
        span({"server.port": 22010 + (1 << 21)}),  # the port's varint bytes then more: a longer AnyValue
        span({"server.port": -22010}),  # negative: a ten-byte varint
        span({"server.port": 0}),
        span({"server.port.x": 22010, "xserver.port": 8080}),  # other keys ending or starting alike
        span({"peer": {"server.port": 22010}}),  # a kvlist entry (KeyValueList.values, tag 0x0A)
        span({"note": "server.port 22010"}),  # the key's text in a value
        span({"server.port": 22010}, events=(Event("e", {"server.port": 22010}, timestamp=5),),  # event and link
             links=(Link(link_ctx, {"server.port": 8080}),)),  # attributes (tags 0x1A, 0x22)
        span({"a": 1}, events=(Event("e", {"server.port": 80}, timestamp=5),),
             links=(Link(link_ctx, {"server.port": 80}),)),
    ]


@pytest.mark.parametrize("encoder", ["agent", "sdk"])
def test_a_mixed_batch_counts_as_the_full_decode(encoder: str) -> None:
    raw = both_encoders(mixed_batch())[encoder == "sdk"]
    counts = agree(raw)
    # each port once as the plain attribute; 22010 also in RES_B's and the other scope's span, and
    # in the span whose event has it too; 8080 and 80 only there (plus the link and event: not counted)
    assert counts == {80: 1, 443: 1, 8080: 1, 16383: 1, 16384: 1, 22010: 4, 65535: 1}
    assert count_spans(raw) == len(mixed_batch())


def test_spans_from_the_agents_span_builder() -> None:
    # pid 100 of the fixture host tree is nginx.service; the Resource is the agent's (one per process)
    host = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
    cache = ServiceCache(ProcFS(str(FIXTURES / "proc" / "host")), host_info=host)
    builder = SpanBuilder(resource_for=cache.resource_of)
    records = []
    for i, (local, peer) in enumerate([(22010, 40000), (80, 40001), (65535, 40002), (None, 40003)]):
        conn = Connection(pid=100, tid=100, fd=3 + i, peer=Endpoint("127.0.0.1", peer), transport="tcp", comm="nginx",
                          local=Endpoint("127.0.0.1", local) if local else None)
        attrs: dict[str, Any] = {"http.request.method": "GET", "url.path": "/x", "http.response.status_code": 200}
        records.append(builder.build(Call(protocol="http", role=Role.SERVER, start_ns=10, end_ns=20, name="GET /x",
                                          attributes=dict(attrs), conn=conn)))
        records.append(builder.build(Call(protocol="http", role=Role.CLIENT, start_ns=10, end_ns=20, name="GET",
                                          attributes=dict(attrs), conn=conn)))
    raw = OtlpTraceEncoder().encode(records)
    # server spans: their local port; client spans: the peer's port (40000-40003)
    assert agree(raw, (22010, 80, 65535, 40000, 40003, 443)) == {22010: 1, 80: 1, 65535: 1, 40000: 1, 40003: 1,
                                                                  443: 0}
    assert count_spans(raw) == 8


@pytest.mark.parametrize("name, port, spans", [("agent_flask_2spans", 22010, 2), ("agent_nginx_8spans", 22020, 8)])
def test_requests_the_agent_sent(name: str, port: int, spans: int) -> None:
    raw = (FIXTURES / "otlp" / f"{name}.bin").read_bytes()
    assert agree(raw, (port, 22010, 22020, 80))[port] == spans
    assert count_spans(raw) == spans


_values = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(PORTS), st.text(max_size=8), st.booleans(),
                    st.floats(allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.dictionaries(st.sampled_from(["server.port", "network.peer.port", "k", "server.address"]),
                                          _values, max_size=4), st.booleans()), max_size=12))
def test_any_batch_counts_as_the_full_decode(spans: list[tuple[dict[str, Any], bool]]) -> None:
    batch = [span(attrs, RES if first else RES_B) for attrs, first in spans]
    for raw in both_encoders(batch):
        agree(raw)


def test_a_value_holding_the_encoded_pair_is_counted_the_known_limit() -> None:
    # Only bytes equal to the encoded attribute inside a string or bytes value fool the count: no
    # span of the bench carries control bytes like these (wrk's, curl's and Flask's fixed heads).
    raw = OtlpTraceEncoder().encode([span({"blob": port_field(8080)})])
    assert old_counts(raw, 8080) == 0
    assert count_port(raw, port_field(8080)) == 1


def test_port_field_is_the_encoders_bytes() -> None:
    raw = OtlpTraceEncoder().encode([span({"server.port": 22010})])
    assert port_field(22010) == b"\x4a\x13\x0a\x0bserver.port\x12\x04\x18\xfa\xab\x01"
    assert port_field(22010) in raw
    with pytest.raises(ValueError):
        port_field(0)


def test_the_counter_checks_its_first_requests_and_falls_back_on_a_difference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    raw = both_encoders(mixed_batch())[0]
    counter = Counter(tmp_path / "count", 22010)
    assert (tmp_path / "count").read_text() == "0 0\n"
    calls: list[int] = []

    def counted(r: bytes, p: int) -> tuple[int, int]:
        calls.append(1)
        return full_counts(r, p)

    monkeypatch.setattr(sink, "full_counts", counted)
    empty = OtlpTraceEncoder().encode([])
    for _ in range(4):
        counter.export(empty, None)  # no spans: not a check that counts
        counter.export(raw, None)
    assert sink.VERIFY == 2 and len(calls) == 4  # two checks, and the empty requests until the second
    assert (tmp_path / "count").read_text() == f"{4 * 4} 8\n" and counter.fast

    # a count that differs from the full decode during the checks: said, and the full decode kept
    counter = Counter(tmp_path / "count2", 22010)
    monkeypatch.setattr(sink, "count_port", lambda r, f: 99)
    for _ in range(4):
        counter.export(raw, None)
    assert not counter.fast and counter.spans == 16
    assert "counted 99 spans, the full decode 4" in capsys.readouterr().err


def test_the_unfiltered_counter_counts_every_span(tmp_path: Path) -> None:
    counter = Counter(tmp_path / "count")
    for raw in both_encoders(mixed_batch()) * 3:
        counter.export(raw, None)
    assert counter.spans == 6 * len(mixed_batch()) and counter.fast


def test_the_count_file_lives_in_memory_where_the_host_has_dev_shm(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setattr(sink_proc, "SHM", shm)
    d = sink_proc.count_dir(tmp_path / "work")
    assert d.parent == shm
    monkeypatch.setattr(sink_proc, "SHM", tmp_path / "none")
    (tmp_path / "work").mkdir()
    assert sink_proc.count_dir(tmp_path / "work").parent == tmp_path / "work"
