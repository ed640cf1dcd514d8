"""The fast constructors build the same frozen records as the dataclasses' own __init__."""

from __future__ import annotations

import dataclasses

import pytest

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.protocols.fast_call import copy_call, new_call, new_connection, new_endpoint


def test_new_endpoint_equals_dataclass() -> None:
    made = new_endpoint("127.0.0.1", 8080)
    assert made == Endpoint("127.0.0.1", 8080)
    assert hash(made) == hash(Endpoint("127.0.0.1", 8080))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.port = 1  # type: ignore[misc]


def test_new_connection_positional_order_is_the_models() -> None:
    # capture/state.py builds Connections positionally in this order: pin it.
    assert [f.name for f in dataclasses.fields(Connection)][:8] == [
        "pid", "tid", "fd", "cgroup_id", "local", "peer", "transport", "comm"]  # fmt: skip
    local, peer = Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 51000)
    made = new_connection(10, 11, 7, 99, local, peer, "tcp", "nginx")
    assert made == Connection(pid=10, tid=11, fd=7, cgroup_id=99, local=local, peer=peer, transport="tcp", comm="nginx")
    assert new_connection(1, 2, 3) == Connection(1, 2, 3)  # the model's defaults


def test_new_call_defaults_and_fresh_attributes() -> None:
    a = new_call(protocol="http", role=Role.SERVER, start_ns=1, end_ns=2, name="GET")
    b = new_call(protocol="http", role=Role.SERVER, start_ns=1, end_ns=2, name="GET")
    assert a == Call(protocol="http", role=Role.SERVER, start_ns=1, end_ns=2, name="GET")
    assert a.attributes == {} and a.attributes is not b.attributes  # default_factory: one dict each
    assert copy_call(a, name="POST") == dataclasses.replace(a, name="POST")
