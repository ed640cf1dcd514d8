"""The agent's own connections: a local collector's side of the agent's exports is left out.

``own_endpoints`` on real sockets of this process (loopback); ``OwnConnections`` with a fake clock;
the real Pipeline dropping (and counting) the server calls whose peer is one of ours.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Optional

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.identity.own_sockets import OwnConnections, OwnKey, endpoint_port, own_endpoints, process_endpoints
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.clock import ManualClock
from tests.support.pipeline_parts import Exported, NoTracker


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    yield listener, client, accepted
    for s in (client, accepted, listener):
        s.close()


def test_own_endpoints_lists_connected_tcp_sockets_and_leaves_them_working(tcp_pair) -> None:
    listener, client, accepted = tcp_pair
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.1", 9))
    try:
        own = own_endpoints()
        c_addr, c_port = client.getsockname()
        s_port = listener.getsockname()[1]
        assert (c_addr, c_port, s_port) in own  # the client end: what a collector sees as its peer
        assert ("127.0.0.1", s_port, c_port) in own  # the accepted end
        assert all(port != udp.getsockname()[1] for _, port, _ in own)  # datagram sockets: not calls
        assert all(local != s_port or remote != 0 for _, local, remote in own)  # a listener has no peer
        # looked at through duplicates: the sockets themselves still work (and are still open)
        client.sendall(b"ping")
        assert accepted.recv(4) == b"ping"
        assert own_endpoints() == own
    finally:
        udp.close()


def test_own_endpoints_of_an_ipv6_socket_talking_ipv4_gives_the_ipv4_address() -> None:
    listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    client = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        client.connect(("::ffff:127.0.0.1", listener.getsockname()[1]))
        assert ("127.0.0.1", client.getsockname()[1], listener.getsockname()[1]) in own_endpoints()
    finally:
        client.close()
        listener.close()


def test_own_endpoints_without_the_fd_directory_is_empty(tmp_path) -> None:
    assert own_endpoints(str(tmp_path / "missing")) == set()


def test_a_miss_reads_the_sockets_again_at_most_once_per_period() -> None:
    clock = ManualClock(100.0)
    reads: list[float] = []
    current: set[OwnKey] = set()

    def endpoints() -> set[OwnKey]:
        reads.append(clock.now)
        return set(current)

    own = OwnConnections(endpoints, clock, min_refresh_s=1.0, ports=frozenset({4317}), other_refresh_s=30.0)
    assert own.is_own("127.0.0.1", 40001, 4317) is False  # first miss: read (nothing yet)
    current.add(("127.0.0.1", 40001, 4317))  # the exporter connects
    clock.now += 0.5
    assert own.is_own("127.0.0.1", 40001, 4317) is False  # within the period: not read again
    clock.now += 0.6
    assert own.is_own("127.0.0.1", 40001, 4317) is True  # read again
    assert own.is_own("127.0.0.1", 40001, 4317) is True  # a hit: no read
    assert own.is_own("127.0.0.1", 40001, 4318) is False  # same peer, another port: not ours
    assert own.is_own("127.0.0.2", 40001, 4317) is False
    assert reads == [100.0, 101.1] and own.refreshes == 2


def test_calls_to_ports_the_agent_does_not_talk_to_reread_only_now_and_then() -> None:
    """A busy server's every span misses: those misses reread the sockets twice a minute at most;
    a port the agent's sockets were seen connected to counts as the exporter's."""
    clock = ManualClock(100.0)
    reads: list[float] = []
    current: set[OwnKey] = {("127.0.0.1", 40001, 9000)}  # connected to 9000 (not configured)

    def endpoints() -> set[OwnKey]:
        reads.append(clock.now)
        return set(current)

    own = OwnConnections(endpoints, clock, min_refresh_s=1.0, ports=frozenset({4317}), other_refresh_s=30.0)
    for _ in range(100):  # an app server's calls, one every 0.1 s
        assert own.is_own("127.0.0.1", 50000, 8080) is False
        clock.now += 0.1
    assert reads == [100.0]  # once in 10 s
    current.add(("127.0.0.1", 40002, 9000))  # a second connection to the port learnt above
    clock.now += 1.0
    assert own.is_own("127.0.0.1", 40002, 9000) is True  # learnt port: the one-second period
    assert len(reads) == 2


@pytest.mark.parametrize(
    ("endpoint", "protocol", "port"),
    [
        ("http://127.0.0.1:4317", "grpc", 4317),
        ("127.0.0.1:14317", "grpc", 14317),
        ("https://collector.example:443", "grpc", 443),
        ("http://collector", "grpc", 4317),
        ("http://collector/v1/traces", "http/protobuf", 4318),
        ("http://[::1]:4318", "http/protobuf", 4318),
        ("https://gw.example/otlp", "http/protobuf", 443),  # what the HTTP exporter connects to
        ("http://host:notaport", "grpc", None),
        ("", "grpc", None),
    ],
)
def test_endpoint_port(endpoint: str, protocol: str, port: int | None) -> None:
    assert endpoint_port(endpoint, protocol) == port


COLLECTOR_PORT = 4317
AGENT_PORT = 40001


def export_call(role: Role, peer: Endpoint, local: Endpoint) -> Call:
    attrs = {"rpc.system.name": "grpc", "rpc.method": "opentelemetry.proto.collector.trace.v1.TraceService/Export"}
    return Call(protocol="grpc", role=role, start_ns=1_000, end_ns=2_000, name=str(attrs["rpc.method"]),
                attributes=attrs, conn=Connection(pid=300, tid=300, fd=7, peer=peer, local=local))


def test_the_pipeline_leaves_out_a_collectors_side_of_the_agents_exports() -> None:
    exported = Exported()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    own = OwnConnections(lambda: {("127.0.0.1", AGENT_PORT, COLLECTOR_PORT)}, ManualClock(100.0))
    # telemetry traced ([capture] telemetry_calls = true): the agent's own exports still are not
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http2"}))), NoTracker(), builder.build,
                    exported, own=own, trace_telemetry=True)
    collector = Endpoint("127.0.0.1", COLLECTOR_PORT)
    pipe.on_call(export_call(Role.SERVER, Endpoint("127.0.0.1", AGENT_PORT), collector))  # the agent's export
    pipe.on_call(export_call(Role.SERVER, Endpoint("127.0.0.1", 40002), collector))  # an app's SDK exporting
    pipe.on_call(export_call(Role.CLIENT, Endpoint("127.0.0.1", AGENT_PORT), collector))  # a client: never ours
    assert pipe.own_traffic == 1
    assert [(s.kind.name, s.attributes.get("rpc.method")) for s in exported.spans] == [
        ("SERVER", "opentelemetry.proto.collector.trace.v1.TraceService/Export"),
        ("CLIENT", "opentelemetry.proto.collector.trace.v1.TraceService/Export"),
    ]
    assert pipe.spans == 2 and not pipe.dropped


class _ExportProcess:
    """Stands in for hostagent.export.process.ChildExporter: its pid and its start listeners."""

    def __init__(self, pid: Optional[int]) -> None:
        self.pid = pid
        self.on_child: list = []


def test_the_pipeline_leaves_out_the_export_processs_own_calls() -> None:
    """The kernel skips only the agent's own pid: the export process's client calls (traced with
    [capture] telemetry_calls = true) are the agent's too, and so is a collector's side of them."""
    exported = Exported()
    builder = SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))
    # the child's connection, as /proc/<child>/net/tcp would show it
    own = OwnConnections(lambda: set(), ManualClock(100.0))
    own.follow(_ExportProcess(None))
    pipe = Pipeline(SettingsHolder(RuntimeSettings(probes=frozenset({"http2"}))), NoTracker(), builder.build,
                    exported, own=own, trace_telemetry=True)
    collector = Endpoint("127.0.0.1", COLLECTOR_PORT)
    pipe.on_call(export_call(Role.CLIENT, collector, Endpoint("127.0.0.1", AGENT_PORT)))  # pid 300: not ours yet
    own._process.on_child[0](300)  # the export process starts as pid 300
    pipe.on_call(export_call(Role.CLIENT, collector, Endpoint("127.0.0.1", AGENT_PORT)))
    assert own.pids == frozenset({300})
    assert pipe.own_traffic == 1
    assert [s.kind.name for s in exported.spans] == ["CLIENT"]


def test_process_endpoints_reads_another_process_connections(tcp_pair) -> None:
    """What the export process holds, read from /proc (its fds cannot be duplicated from here)."""
    listener, _, _ = tcp_pair
    port = listener.getsockname()[1]
    code = (f"import socket, sys; s = socket.create_connection(('127.0.0.1', {port})); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        local_port = int(child.stdout.readline())
        assert process_endpoints(child.pid) == {("127.0.0.1", local_port, port)}
        own = OwnConnections(lambda: set(), ManualClock(100.0))
        own.follow(_ExportProcess(child.pid))
        assert own.is_own("127.0.0.1", local_port, port)  # a collector's side of the child's export
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(5)
    assert process_endpoints(child.pid) == set()  # gone
