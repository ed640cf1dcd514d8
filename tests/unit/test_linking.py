"""LocalLinker: thread-per-request parents, local client -> server links, holds and their bounds.

Calls are built as the capture stage builds them (pid/tid/peer on ``conn``, kernel monotonic ns);
spans by the real SpanBuilder. Times in ms for reading: ``ms(5)`` is 5 ms after an origin.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import Pipeline, SpanOnly
from hostagent.settings import RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.linking import LinkEmit, LinkGate, LocalLinker
from hostagent.traces.spans import SpanBuilder
from tests.support.clock import ManualClock
from tests.support.live import LiveSpans
from tests.support.pipeline_parts import Exported, NoTracker

BUILD = SpanBuilder(MonotonicToUnix(0), resource_for=lambda call: Resource({}))
A_PORT, B_PORT = 19302, 19301


def ms(n: float) -> int:
    return int(1_000_000_000 + n * 1_000_000)


def http(role: Role, pid: int, tid: int, start: float, end: float, port: int, path: str = "/x",
         peer: str = "127.0.0.1", traceparent: Optional[str] = None) -> Call:
    peer_port = port if role == Role.CLIENT else 40000 + pid
    return Call(protocol="http", role=role, start_ns=ms(start), end_ns=ms(end), name="GET",
                attributes={"http.request.method": "GET", "url.path": path, "server.port": port},
                traceparent=traceparent,
                conn=Connection(pid=pid, tid=tid, fd=5, peer=Endpoint(peer, peer_port)))


def linker(**kw: Any) -> tuple[LocalLinker, list[tuple[Call, ReadableSpan]], ManualClock]:
    out: list[tuple[Call, ReadableSpan]] = []
    clock = ManualClock()
    return LocalLinker(lambda c, s: out.append((c, s)), clock=clock, **kw), out, clock


def offer(lk: LocalLinker, call: Call) -> ReadableSpan:
    span = BUILD.build(call)
    lk.offer(call, span)
    return span


def ids(span: ReadableSpan) -> tuple[int, int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id, span.parent.span_id if span.parent else 0


def link_pairs(pairs: list[tuple[Call, Call]], server_first: bool) -> tuple[LocalLinker, dict[int, ReadableSpan]]:
    """Offer (server, client) pairs in that order or the other, flush; the spans by id of their call."""
    lk, out, _ = linker()
    for call in [c for p in pairs for c in (p if server_first else p[::-1])]:
        offer(lk, call)
    lk.flush_all()
    return lk, {id(call): span for call, span in out}


def assert_each_server_is_its_clients_child(pairs: list[tuple[Call, Call]], emitted: dict[int, ReadableSpan]) -> None:
    for server, client in pairs:
        c_trace, c_span, c_parent = ids(emitted[id(client)])
        s_trace, _, s_parent = ids(emitted[id(server)])
        assert (s_trace, s_parent, c_parent) == (c_trace, c_span, 0)


def test_curl_a_b_in_completion_order_is_one_trace() -> None:
    """Calls complete bottom-up: B's server, A's client, A's server, curl's client."""
    lk, out, _ = linker()
    offer(lk, http(Role.SERVER, 300, 301, 0, 1, A_PORT, "/warm", peer="10.0.0.1"))  # A has served before
    out.clear()
    b_server = offer(lk, http(Role.SERVER, 200, 201, 3, 33, B_PORT, "/sleep"))
    a_client = offer(lk, http(Role.CLIENT, 300, 301, 2, 34, B_PORT, "/sleep"))
    a_server = offer(lk, http(Role.SERVER, 300, 301, 1, 35, A_PORT, "/call"))
    assert out == []  # all waiting for their root
    curl = offer(lk, http(Role.CLIENT, 400, 400, 0.5, 36, A_PORT, "/call"))
    got = {c.conn.pid * 10 + c.role: s for c, s in out}  # type: ignore[union-attr]
    assert len(out) == 4
    trace = ids(curl)[0]
    assert ids(got[4001])[2] == 0 and ids(got[4001])[0] == trace
    assert ids(got[3002]) == (trace, ids(a_server)[1], ids(curl)[1])
    assert ids(got[3001]) == (trace, ids(a_client)[1], ids(a_server)[1])
    assert ids(got[2002]) == (trace, ids(b_server)[1], ids(a_client)[1])
    assert lk.held == 0
    assert lk.counters["thread_links"] == 1 and lk.counters["peer_links"] == 2


def test_traceparent_is_never_overridden() -> None:
    lk, out, _ = linker()
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    server = offer(lk, http(Role.SERVER, 200, 201, 3, 33, B_PORT, traceparent=tp))
    assert out == [(out[0][0], server)]  # emitted at once, untouched


def test_remote_peer_server_is_a_root_at_once() -> None:
    lk, out, _ = linker()
    offer(lk, http(Role.SERVER, 200, 201, 3, 33, B_PORT, peer="10.0.0.7"))
    assert len(out) == 1 and out[0][1].parent is None


def test_client_of_a_non_serving_process_is_not_held() -> None:
    lk, out, _ = linker()
    offer(lk, http(Role.CLIENT, 400, 400, 0, 5, 9999))
    assert len(out) == 1


def test_hold_expires_and_spans_go_out_as_they_are() -> None:
    lk, out, clock = linker(hold_s=1.5)
    offer(lk, http(Role.SERVER, 200, 201, 3, 33, B_PORT))  # local peer: waits for its client
    assert out == [] and lk.held == 1
    clock.now = 1.49
    lk.sweep()
    assert out == []
    clock.now = 1.5
    lk.sweep()
    assert len(out) == 1 and out[0][1].parent is None and lk.held == 0
    assert lk.counters["hold_expired"] == 1


def test_two_identical_requests_in_flight_link_neither() -> None:
    lk, out, _ = linker()
    offer(lk, http(Role.SERVER, 200, 201, 3, 30, B_PORT))
    offer(lk, http(Role.SERVER, 200, 202, 4, 31, B_PORT))
    offer(lk, http(Role.CLIENT, 400, 400, 1, 35, B_PORT))  # could be either's client
    assert lk.counters["peer_ambiguous"] == 1 and lk.counters["peer_links"] == 0
    lk.flush_all()
    assert len(out) == 3 and all(s.parent is None for _, s in out)


def test_client_outside_the_server_window_is_not_adopted() -> None:
    lk, out, _ = linker()
    offer(lk, http(Role.SERVER, 300, 301, 0, 1, A_PORT, "/warm"))
    late = offer(lk, http(Role.CLIENT, 300, 301, 50, 60, 9999))  # after the response: background work
    offer(lk, http(Role.SERVER, 300, 301, 10, 40, A_PORT, peer="10.0.0.1"))
    lk.flush_all()
    assert next(s for _, s in out if s is late or ids(s)[1] == ids(late)[1]).parent is None


def test_overlapping_server_calls_on_one_thread_mark_an_event_loop() -> None:
    lk, out, _ = linker()
    offer(lk, http(Role.SERVER, 300, 301, 0, 20, A_PORT, "/a", peer="10.0.0.1"))
    offer(lk, http(Role.SERVER, 300, 301, 5, 25, A_PORT, "/b", peer="10.0.0.1"))  # starts before /a ended
    assert 300 in lk.event_loop_pids
    offer(lk, http(Role.CLIENT, 300, 301, 30, 32, 9999))
    assert out[-1][1].parent is None  # not held, not linked


def test_bounded_hold() -> None:
    lk, out, _ = linker(max_held=2)
    for tid in range(3):
        offer(lk, http(Role.SERVER, 200, tid, 3, 33, B_PORT, f"/p{tid}"))
    assert lk.held == 2 and len(out) == 1 and lk.counters["hold_overflow"] == 1


def test_linked_spans_are_not_kept_alive_for_the_rest_of_their_hold() -> None:
    """Each server span waits for its local client and is linked and emitted microseconds later;
    the linker must then let go of it, not keep it (and its call) until the hold would have run
    out: under nginx at 30k req/s a 1.5 s hold kept ~40k emitted spans alive, ~100 MiB."""
    import gc

    from hostagent.traces.linking import EXPIRY_SLACK, MAX_BUCKET

    emitted = LiveSpans()
    clock = ManualClock()
    lk = LocalLinker(lambda c, s: emitted.add(s), clock=clock, hold_s=1.5)
    offer(lk, http(Role.SERVER, 200, 201, 3, 4, B_PORT, "/never"))  # its client never comes
    n = 3 * EXPIRY_SLACK
    for i in range(n):
        offer(lk, http(Role.SERVER, 200, 202, 10 + i, 10.5 + i, B_PORT, f"/p{i}"))
        offer(lk, http(Role.CLIENT, 400, 400, 9.9 + i, 10.6 + i, B_PORT, f"/p{i}"))
    assert lk.counters["peer_links"] == n and lk.held == 1 and len(emitted) <= 2 * n
    gc.collect()
    # still referenced: the port's recent clients (each with its server child) and, at most, what
    # the deadline queue took since its last rebuild; before the fix every one of the 2n
    assert len(emitted) <= 2 * MAX_BUCKET + 2 * (EXPIRY_SLACK + 2)
    clock.now = 1.5
    lk.sweep()  # the one still waiting went through every rebuild and leaves at its deadline
    assert lk.counters["hold_expired"] == 1 and lk.held == 0


@pytest.mark.parametrize("server_first", [True, False])
def test_emitted_spans_of_closed_connections_are_let_go(server_first: bool) -> None:
    """A new connection per request (wrk -> Flask under gunicorn): each client call stays in its
    connection's recent calls after it was linked and emitted, since a server call may still come
    for it. What stays must be its ids and times, not its span and call: before, the 4,096
    connections' tables kept every emitted client span alive (and the garbage collector walked them
    at every collection). A later server call of a connection still links, under the emitted client."""
    import gc

    emitted = LiveSpans()
    out: list[tuple[int, int, int]] = []
    lk = LocalLinker(lambda c, s: (emitted.add(s), out.append(ids(s))), clock=ManualClock())
    n = 1000
    for i in range(n):
        server = on_conn(Role.SERVER, 200, 201, 1 + i, 2 + i, 50000 + i)
        client = on_conn(Role.CLIENT, 400, 401, 0.9 + i, 2.1 + i, 50000 + i)
        for call in (server, client) if server_first else (client, server):
            offer(lk, call)
    assert lk.counters["peer_links"] == n and lk.held == 0 and len(out) == 2 * n
    gc.collect()
    assert len(emitted) == 0
    # the last connection's client, emitted and let go, still parents a late server call of its own
    client_ids = out[-2]  # a parent leaves before its child, whichever came first
    assert client_ids[2] == 0
    late = offer(lk, on_conn(Role.SERVER, 200, 201, 1 + (n - 1) + 0.1, 2 + (n - 1) - 0.1, 50000 + n - 1))
    assert lk.counters["peer_links"] == n + 1
    assert (ids(late)[0], ids(late)[2]) == (client_ids[0], client_ids[1])


def test_receiver_traffic_is_dropped() -> None:
    lk, out, _ = linker(ignore_peers=[("127.0.0.1", 14318)])
    offer(lk, http(Role.CLIENT, 400, 400, 0, 5, 14318))
    assert out == [] and lk.counters["receiver_traffic"] == 1


def test_disabled_is_a_bypass() -> None:
    lk, out, _ = linker(enabled=False)
    offer(lk, http(Role.SERVER, 200, 201, 3, 33, B_PORT))
    assert len(out) == 1


def test_look_alike_servers_waiting_are_capped_per_bucket() -> None:
    from hostagent.traces.linking import MAX_BUCKET

    lk, out, _ = linker()
    for tid in range(MAX_BUCKET + 5):
        offer(lk, http(Role.SERVER, 200, tid, 3, 33, B_PORT))  # same port, method, path
    assert lk.held == MAX_BUCKET and len(out) == 5 and lk.counters["hold_overflow"] == 5


def test_query_tells_look_alike_requests_apart() -> None:
    from dataclasses import replace

    lk, out, _ = linker()
    servers = []
    for i in range(2):
        call = http(Role.SERVER, 200, 201 + i, 3, 30, B_PORT, "/sleep")
        servers.append(offer(lk, replace(call, attributes={**call.attributes, "url.query": f"i={i}"})))
    client = http(Role.CLIENT, 400, 400, 1, 35, B_PORT, "/sleep")
    sent = offer(lk, replace(client, attributes={**client.attributes, "url.query": "i=1"}))
    linked = [s for _, s in out if s.parent is not None]
    assert len(linked) == 1 and ids(linked[0])[1] == ids(servers[1])[1] and ids(linked[0])[2] == ids(sent)[1]


def on_conn(role: Role, pid: int, tid: int, start: float, end: float, client_port: int,
            server_port: int = B_PORT) -> Call:
    """An HTTP call on the loopback connection client_port -> server_port, both ends known."""
    local, peer = (client_port, server_port) if role == Role.CLIENT else (server_port, client_port)
    return Call(protocol="http", role=role, start_ns=ms(start), end_ns=ms(end), name="GET",
                attributes={"http.request.method": "GET", "url.path": "/x", "server.port": server_port},
                conn=Connection(pid=pid, tid=tid, fd=5, local=Endpoint("127.0.0.1", local),
                                peer=Endpoint("127.0.0.1", peer)))


@pytest.mark.parametrize("server_first", [True, False])
def test_look_alike_requests_on_sixteen_connections_each_link_to_their_own_client(server_first: bool) -> None:
    """A load generator's keep-alive connections: 16 identical requests in flight at once, all
    within one another's time. By server port alone each is ambiguous; by connection each has one
    client."""
    pairs = []
    for i in range(16):
        server = on_conn(Role.SERVER, 200, 201, 1 + 0.01 * i, 1.5 + 0.01 * i, 50000 + i)
        client = on_conn(Role.CLIENT, 400, 401, 0.9 + 0.01 * i, 1.6 + 0.01 * i, 50000 + i)
        pairs.append((server, client))
    lk, emitted = link_pairs(pairs, server_first)
    assert lk.counters["peer_links"] == 16 and lk.counters["peer_ambiguous"] == 0
    assert len(emitted) == 32 and lk.held == 0
    assert_each_server_is_its_clients_child(pairs, emitted)


def test_a_client_whose_own_port_is_unknown_still_links_by_server_port() -> None:
    lk, out, _ = linker()
    server = on_conn(Role.SERVER, 200, 201, 2, 3, 50001)
    client = http(Role.CLIENT, 400, 400, 1, 4, B_PORT)  # no local end: matched by port + request
    offer(lk, client)  # the rarer order: the client first, then the server finds it among the port's
    offer(lk, server)
    lk.flush_all()
    assert lk.counters["peer_links"] == 1
    emitted = {id(call): span for call, span in out}
    assert ids(emitted[id(server)])[2] == ids(emitted[id(client)])[1]


def test_matching_by_port_uses_the_port_the_server_received_on_not_the_host_header() -> None:
    """Behind a proxy the Host header names the upstream (``Host: back`` -> server.port 80) or
    the original host: the client connected to the server's own port, which is what matches (the
    client first, its own port unknown: the server looks among the clients of its port)."""
    lk, out, _ = linker()
    server = replace(on_conn(Role.SERVER, 200, 201, 2, 3, 50001), attributes={
        "http.request.method": "GET", "url.path": "/x", "server.port": 80})
    client = replace(http(Role.CLIENT, 400, 400, 1, 4, B_PORT), attributes={
        "http.request.method": "GET", "url.path": "/x", "server.port": 80})  # no local end: by port
    offer(lk, client)
    offer(lk, server)
    lk.flush_all()
    assert lk.counters["peer_links"] == 1
    emitted = {id(call): span for call, span in out}
    assert ids(emitted[id(server)])[2] == ids(emitted[id(client)])[1]


def test_a_server_on_another_connection_is_not_taken_for_this_clients() -> None:
    lk, out, _ = linker()
    offer(lk, on_conn(Role.SERVER, 200, 201, 2, 3, 50001))
    offer(lk, on_conn(Role.CLIENT, 400, 401, 1, 4, 50002))  # same port, method, path and time
    assert lk.counters["peer_links"] == 0
    lk.flush_all()
    assert len(out) == 2 and all(s.parent is None for _, s in out)


@pytest.mark.parametrize("by_connection", [True, False])
def test_keep_alive_exchanges_each_link_to_their_own_client_not_the_previous_one(by_connection: bool) -> None:
    """curl fetching one URL three times on one keep-alive connection, 0.2 ms per exchange (well
    inside the 2 ms syscall-race tolerance), each server call reaching the linker before its
    client (it answers before the client reads). The previous exchange's client is complete and
    within the tolerance of this server call, but it had its answer before this request was even
    received: never this call's parent (every server after the first was linked to the client
    before it). Also when the client's own port is unknown (matched by server port; then the
    client reaches the linker first, the order in which such a pair links)."""
    lk, out, _ = linker()
    pairs = []
    for i in range(3):
        t = 0.3 * i
        server = on_conn(Role.SERVER, 200, 201, t + 0.05, t + 0.15, 50001)
        client = (on_conn(Role.CLIENT, 400, 401, t, t + 0.2, 50001) if by_connection
                  else http(Role.CLIENT, 400, 400, t, t + 0.2, B_PORT))
        for call in (server, client) if by_connection else (client, server):
            offer(lk, call)
        pairs.append((server, client))
    lk.flush_all()
    assert lk.counters["peer_links"] == 3 and lk.counters["peer_ambiguous"] == 0
    emitted = {id(call): span for call, span in out}
    for server, client in pairs:
        assert ids(emitted[id(server)])[2] == ids(emitted[id(client)])[1]


def test_a_server_call_received_after_the_client_had_its_answer_is_not_its_child() -> None:
    """The client first (the rarer order): a later exchange's server call on the same connection,
    inside the tolerance of that client's end, is not its child."""
    lk, out, _ = linker()
    offer(lk, on_conn(Role.CLIENT, 400, 401, 0, 0.2, 50001))
    offer(lk, on_conn(Role.SERVER, 200, 201, 0.25, 0.3, 50001))  # received 50 us after the answer
    assert lk.counters["peer_links"] == 0
    lk.flush_all()
    assert len(out) == 2 and all(s.parent is None for _, s in out)


def grpc_on_conn(role: Role, start: float, end: float, stream_id: int, client_port: int = 50001) -> Call:
    """A unary gRPC call on HTTP/2 stream ``stream_id`` of the loopback connection client_port -> B."""
    pid = 200 if role == Role.SERVER else 400
    call = on_conn(role, pid, pid + 1, start, end, client_port)
    return replace(call, protocol="grpc", name="demo.Demo/Unary", stream_id=stream_id,
                   attributes={"rpc.system.name": "grpc", "rpc.method": "demo.Demo/Unary", "server.port": B_PORT})


@pytest.mark.parametrize("server_first", [True, False])
def test_concurrent_grpc_calls_on_one_connection_each_link_to_their_own_stream(server_first: bool) -> None:
    """grpcio's futures: 20 look-alike unary calls in flight at once on one channel, every one
    inside every other's time. Time, connection and method cannot tell them apart; the HTTP/2
    stream id (1, 3, 5... at both ends) can."""
    pairs = []
    for i in range(20):
        sid = 2 * i + 1
        client = grpc_on_conn(Role.CLIENT, 0.01 * i, 5 + 0.01 * (19 - i), sid)
        server = grpc_on_conn(Role.SERVER, 1 + 0.01 * i, 4 + 0.01 * (19 - i), sid)
        pairs.append((server, client))
    lk, emitted = link_pairs(pairs, server_first)
    assert lk.counters["peer_links"] == 20 and lk.counters["peer_ambiguous"] == 0
    assert len(emitted) == 40 and lk.held == 0
    assert_each_server_is_its_clients_child(pairs, emitted)


@pytest.mark.parametrize("server_first", [True, False])
def test_grpc_calls_whose_client_lost_its_path_still_link_by_stream(server_first: bool) -> None:
    """Acceptance run: 4 concurrent 100 KB calls on one grpcio channel, then small ones. The client's
    HPACK table became partly known (later streams' HEADERS beyond the captured head of one big
    write), so every later client call has no :path, no rpc.method; its server has them. Before,
    the request compare left all 13 such server spans unlinked (hold_expired), each its own trace."""
    pairs = []
    for i in range(6):
        sid = 2 * i + 1
        client = grpc_on_conn(Role.CLIENT, 0.01 * i, 5 + 0.01 * (5 - i), sid)
        # what the client end exported: named "grpc", no method (hostagent.http2.headers_incomplete)
        client = replace(client, name="grpc", attributes={"rpc.system.name": "grpc", "server.port": B_PORT,
                                                         "hostagent.http2.headers_incomplete": True})
        server = grpc_on_conn(Role.SERVER, 1 + 0.01 * i, 4 + 0.01 * (5 - i), sid)
        pairs.append((server, client))
    lk, emitted = link_pairs(pairs, server_first)
    assert lk.counters["peer_links"] == 6 and lk.counters["peer_ambiguous"] == 0
    assert_each_server_is_its_clients_child(pairs, emitted)


def test_a_pathless_call_on_another_stream_is_not_linked() -> None:
    """Stream ids still tell the exchanges of one connection apart, named or not."""
    lk, out, _ = linker()
    client = grpc_on_conn(Role.CLIENT, 0, 5, 3)
    client = replace(client, name="grpc", attributes={"rpc.system.name": "grpc", "server.port": B_PORT})
    offer(lk, grpc_on_conn(Role.SERVER, 1, 4, 5))
    offer(lk, client)
    lk.flush_all()
    assert lk.counters["peer_links"] == 0 and all(s.parent is None for _, s in out)


def test_the_pids_that_served_last_stay_when_the_serving_table_is_trimmed() -> None:
    """Past 4,096 serving processes the sweep keeps the 2,048 that served last (least recently
    served first out): a process serving all along keeps its client calls held."""
    lk, out, _ = linker()
    offer(lk, http(Role.SERVER, 1, 1, 0, 1, A_PORT, peer="10.0.0.1"))  # served first ...
    for pid in range(2, 4100):
        offer(lk, http(Role.SERVER, pid, pid, 0, 1, A_PORT, peer="10.0.0.1"))
    offer(lk, http(Role.SERVER, 1, 1, 2, 3, A_PORT, peer="10.0.0.1"))  # ... and again last
    lk.sweep()
    offer(lk, http(Role.CLIENT, 1, 1, 5, 6, 9999, peer="10.0.0.9"))  # pid 1 still serves: held
    offer(lk, http(Role.CLIENT, 2, 2, 5, 6, 9999, peer="10.0.0.9"))  # pid 2 served long ago: out
    assert lk.held == 1 and out[-1][0].conn.pid == 2  # type: ignore[union-attr]


def test_the_pipelines_gate_and_span_only_are_called_as_their_own_methods() -> None:
    """The pipeline (a LinkGate) and SpanOnly (a LinkEmit) are called directly, not through a
    bound method object; the same spans, a parent before its child."""
    queued: list[ReadableSpan] = []
    seen: list[ReadableSpan] = []
    emit = SpanOnly(queued.append)
    lk = LocalLinker(emit, clock=ManualClock())
    pipe = Pipeline(SettingsHolder(RuntimeSettings()), NoTracker(), BUILD.build, Exported(), linker=lk,
                    observers=(lambda c, s: seen.append(s),))
    assert lk._gate_native is pipe and lk._emit_native is emit
    server = offer(lk, http(Role.SERVER, 200, 201, 3, 33, B_PORT))
    client = offer(lk, http(Role.CLIENT, 400, 400, 2, 34, B_PORT))
    assert seen == queued == [client, server] and pipe.spans == 2
    assert ids(server) == (ids(client)[0], ids(server)[1], ids(client)[1])
    lk.set_gate(lambda c, s, p, k: False)  # any other callable: called as given
    assert lk._gate_native is None
    offer(lk, http(Role.SERVER, 500, 501, 40, 41, B_PORT, peer="10.0.0.1"))
    assert len(queued) == 2
    assert issubclass(Pipeline, LinkGate) and issubclass(SpanOnly, LinkEmit)
