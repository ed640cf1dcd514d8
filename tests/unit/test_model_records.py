"""The records' written-out constructors (hostagent/model.py): compiled they are C, from the source
they set the fields as the dataclass's own __init__ would. Either way they must take every field,
in order, positionally and by name, with the dataclass's defaults, and keep what the dataclasses
gave: frozen, equality, hashing, repr, ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from types import FunctionType
from typing import Any

import pytest

from hostagent import model
from hostagent.model import Call, Connection, Direction, Endpoint, Role, Segment
from hostagent.protocols.base import ParserStats

LOCAL, PEER = Endpoint("127.0.0.1", 8080), Endpoint("127.0.0.1", 51000)
CONN = Connection(10, 11, 7, 99, LOCAL, PEER, "tcp", "nginx")

# One value per field, in field order, none of them the field's default.
VALUES: list[tuple[type, list[Any]]] = [
    (Endpoint, ["::1", 443]),
    (Segment, [Direction.INGRESS, b"GET / HTTP/1.1\r\n", 4096, 12345, "127.0.0.2", 53, b"tail", b"frames"]),
    (Connection, [10, 11, 7, 99, LOCAL, PEER, "udp", "nginx"]),
    (Call, ["http", Role.SERVER, 100, 200, "GET /users/{id}", {"http.request.method": "GET"}, "500",
            "Internal Server Error", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "k=v",
            (("host", "x"),), (("server", "nginx"),), b"req", b"resp", 3, 4, CONN, "svc", 5]),
    (ParserStats, [1, 2, 3, {"lost": 4}]),
]
IDS = [cls.__name__ for cls, _ in VALUES]


@pytest.mark.parametrize(("cls", "values"), VALUES, ids=IDS)
def test_init_takes_every_field_in_order_with_the_defaults(cls: type, values: list[Any]) -> None:
    fields = dataclasses.fields(cls)
    assert len(values) == len(fields)
    positional = cls(*values)
    by_name = cls(**{f.name: v for f, v in zip(fields, values)})
    for f, v in zip(fields, values):
        assert getattr(positional, f.name) == v and getattr(by_name, f.name) == v, f.name
        assert f.default is dataclasses.MISSING or f.default != v, f"{f.name}: pick a value that is not the default"
    required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    least, again = cls(*values[: len(required)]), cls(*values[: len(required)])
    for f in fields[len(required):]:
        if f.default_factory is not dataclasses.MISSING:  # a fresh value per instance
            assert getattr(least, f.name) == f.default_factory(), f.name
            assert getattr(least, f.name) is not getattr(again, f.name), f.name
        else:
            assert getattr(least, f.name) == f.default, f.name
    assert positional == by_name and (positional != least or len(required) == len(fields))
    assert repr(positional) == f"{cls.__name__}(" + ", ".join(f"{f.name}={v!r}" for f, v in zip(fields, values)) + ")"


@pytest.mark.parametrize(("cls", "values"), VALUES, ids=IDS)
def test_init_is_the_written_out_one(cls: type, values: list[Any]) -> None:
    """Compiled, a written-out __init__ is C; the one dataclasses generates stays Python (~3x slower)."""
    init = cls.__dict__["__init__"]
    if model.COMPILED:
        assert not isinstance(init, FunctionType)
    else:
        assert init.__code__.co_filename == model.__file__


def test_compiled_flag_says_how_the_module_was_loaded() -> None:
    assert model.COMPILED == (not model.__file__.endswith(".py"))


OTHER_FIRST = {Endpoint: "127.0.0.9", Segment: Direction.EGRESS, Connection: 20, Call: "grpc"}


@pytest.mark.parametrize(("cls", "values"), VALUES[:4], ids=IDS[:4])
def test_frozen_records_stay_frozen_and_replaceable(cls: type, values: list[Any]) -> None:
    record, other = cls(*values), OTHER_FIRST[cls]
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, first, other)
    changed = dataclasses.replace(record, **{first: other})
    assert getattr(changed, first) == other and changed != record
    assert dataclasses.replace(changed, **{first: values[0]}) == record


@pytest.mark.parametrize(("cls", "values"), VALUES[:3], ids=IDS[:3])
def test_hashable_records_hash_by_value(cls: type, values: list[Any]) -> None:
    assert hash(cls(*values)) == hash(cls(*values))
    assert len({cls(*values), cls(*values)}) == 1


def test_call_attributes_are_its_own_unless_given() -> None:
    attrs = {"a": 1}
    assert Call("http", Role.CLIENT, 1, 2, "GET", attrs).attributes is attrs
    assert Call("http", Role.CLIENT, 1, 2, "GET", attributes=None).attributes == {}


def test_parser_stats_count_in_place() -> None:
    stats = ParserStats()
    stats.resyncs += 1
    stats.extra["lost"] = stats.extra.get("lost", 0) + 2
    assert stats == ParserStats(resyncs=1, extra={"lost": 2}) and ParserStats().extra == {}


def test_spend_wire_empties_the_raw_headers_and_bodies_alone() -> None:
    values = dict(VALUES)[Call]
    call = Call(*values)
    model.spend_wire(call)
    expected = dict(zip([f.name for f in dataclasses.fields(Call)], values))
    expected |= {"request_headers": (), "response_headers": (), "request_body": b"", "response_body": b""}
    assert {f.name: getattr(call, f.name) for f in dataclasses.fields(Call)} == expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.request_body = b"x"  # type: ignore[misc]  # still frozen to everyone else
