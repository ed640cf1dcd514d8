"""Every parser gives each Call a dict of attributes of its own.

The pipeline writes the peer attributes and the wire detail into a tracker's Call's attributes
in place (hostagent.pipeline ``_handle``, ``owned``): one copy per span instead of two. That is
only right while no parser hands out a dict it keeps (a memo of a query template's attributes,
a connection's constant attributes shared by its calls, a default dict). Here every parser of the
registry parses recordings from real servers twice: once with each Call's attributes scribbled
over as soon as the Call comes out, as the pipeline does, once untouched. Both runs must give
the same Calls, and no two Calls one dict. A future parser is covered by adding a recording."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hostagent.model import Call, Direction, Segment
from hostagent.protocols.base import StreamParser
from hostagent.protocols.registry import PROTOCOLS
from tests.fixtures.http1.load import segments as http1_segments
from tests.support.db_fixtures import segments as db_segments
from tests.support.h2_recorder import load_chunks
from tests.support.h2_recorder import segments as h2_segments

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SPECS = {spec.name: spec for spec in PROTOCOLS}


def _h2(name: str) -> list[list[Segment]]:
    per_conn = h2_segments(load_chunks(FIXTURES / "http2" / f"{name}.json"), "client")
    return [per_conn[c] for c in sorted(per_conn)]


def _dns(name: str) -> list[list[Segment]]:
    doc = json.loads((FIXTURES / "dns" / f"{name}.json").read_text())
    out = []
    for s in doc["segments"]:
        data = bytes.fromhex(s["hex"])
        peer = s["peer"] or ["", 0]
        direction = Direction.EGRESS if s["dir"] == "egress" else Direction.INGRESS
        out.append(Segment(direction, data, len(data), s["ts"], *peer))
    return [out]


# (protocol, transport, recording, its connections as Segments seen by one side)
CASES: list[tuple[str, str, str, Callable[[], list[list[Segment]]]]] = [
    ("http", "tcp", "nginx_keepalive_3 (server)", lambda: [http1_segments("nginx_keepalive_3", "server")]),
    ("http", "tcp", "nginx_pipelined (client)", lambda: [http1_segments("nginx_pipelined", "client")]),
    ("http", "tcp", "gunicorn_flask_query", lambda: [http1_segments("gunicorn_flask_query", "server")]),
    ("http", "tcp", "py_post_body", lambda: [http1_segments("py_post_body", "server")]),
    ("http2", "tcp", "grpc_concurrent", lambda: _h2("grpc_concurrent")),
    ("http2", "tcp", "grpc_shapes", lambda: _h2("grpc_shapes")),
    ("http2", "tcp", "curl_nginx", lambda: _h2("curl_nginx")),
    ("postgresql", "tcp", "pg_psycopg_prepared", lambda: [db_segments("pg_psycopg_prepared")]),
    ("postgresql", "tcp", "pg_psql_multi", lambda: [db_segments("pg_psql_multi")]),
    ("mysql", "tcp", "my_pymysql", lambda: [db_segments("my_pymysql")]),
    ("mysql", "tcp", "my_connector_prepared", lambda: [db_segments("my_connector_prepared")]),
    ("redis", "tcp", "redis_py_pipeline100", lambda: [db_segments("redis_py_pipeline100")]),
    ("redis", "tcp", "redis_cli", lambda: [db_segments("redis_cli")]),
    ("dns", "udp", "udp_unconnected", lambda: _dns("udp_unconnected")),
    ("dns", "tcp", "tcp", lambda: _dns("tcp")),
]


def _parser(protocol: str, transport: str) -> StreamParser:
    spec = SPECS[protocol]
    return spec.new_parser_for(transport) if spec.new_parser_for is not None else spec.new_parser()


def _summary(call: Call) -> tuple[object, ...]:
    return (call.protocol, call.role, call.name, call.start_ns, call.end_ns, call.error_type,
            tuple(sorted((k, repr(v)) for k, v in call.attributes.items())))


def _parse(protocol: str, transport: str, conns: list[list[Segment]], scribble: bool) -> list[tuple[object, ...]]:
    """Summaries of every Call, taken as it comes out; with ``scribble``, its attributes are then
    overwritten, as the pipeline's in-place writes would. Every connection is parsed twice, by two
    parsers: a dict shared through the module (a memo) shows as much as one a parser keeps."""
    seen: list[tuple[object, ...]] = []
    dicts: list[object] = []  # kept alive: their ids stay unique
    for segs in [*conns, *conns]:
        parser = _parser(protocol, transport)
        for out in [*(parser.feed(seg) for seg in segs), parser.close(10**15)]:
            for call in out:
                seen.append(_summary(call))
                dicts.append(call.attributes)
                if scribble:
                    for key in list(call.attributes):
                        call.attributes[key] = "scribbled"
                    call.attributes["peer.service"] = "scribbled"
    assert len({id(d) for d in dicts}) == len(dicts), "two Calls share one attributes dict"
    return seen


@pytest.mark.parametrize(("protocol", "transport", "recording", "conns"), CASES, ids=[c[2] for c in CASES])
def test_a_calls_attributes_are_its_own(protocol: str, transport: str, recording: str,
                                        conns: Callable[[], list[list[Segment]]]) -> None:
    untouched = _parse(protocol, transport, conns(), scribble=False)
    scribbled = _parse(protocol, transport, conns(), scribble=True)
    assert untouched, f"{recording}: the recording gives no Call"
    assert scribbled == untouched


def test_every_protocol_of_the_registry_is_covered() -> None:
    assert {spec.name for spec in PROTOCOLS} == {case[0] for case in CASES}
