"""The pipeline reads the objects it uses per call natively (hostagent.pipeline: ``Policy`` and the
collaborators typed as their compiled classes): a settings snapshot's fields once per snapshot,
and the tracker, the SpanBuilder, RED metrics, the peers, the own-connection check and the trace
linker called as the classes they are. Anything else handed in (tests' stand-ins, a wrapper
function) is still called as it was given, and gives the same spans."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from hostagent.capture.tracker import ConnectionTracker
from hostagent.config import Config
from hostagent.identity.listeners import ListenerMap
from hostagent.identity.own_sockets import OwnConnections
from hostagent.identity.peers import PeerResolver
from hostagent.identity.procfs import ProcFS
from hostagent.metrics.provider import make_meter_provider
from hostagent.metrics.red import RedMetrics
from hostagent.model import Call, Connection, Endpoint, Role
from hostagent.pipeline import _ENABLED_MAX, Pipeline, Policy
from hostagent.protocols import http1
from hostagent.receiver.wiring import Layering
from hostagent.settings import RedactionSettings, RuntimeSettings, SettingsHolder
from hostagent.traces.clock import MonotonicToUnix
from hostagent.traces.spans import SpanBuilder
from tests.support.pipeline_parts import Exported, NoTracker


def call(n: int = 0, protocol: str = "http") -> Call:
    return Call(protocol=protocol, role=Role.SERVER, start_ns=1_000 + n, end_ns=2_000 + n, name="GET",
                attributes={"http.request.method": "GET", "url.path": f"/a/{n}", "http.response.status_code": 200},
                conn=Connection(pid=300, tid=300, fd=7, peer=Endpoint("10.0.0.9", 40898),
                                local=Endpoint("10.0.0.1", 8080)))


def builder() -> SpanBuilder:
    return SpanBuilder(MonotonicToUnix(0), resource_for=lambda c: Resource({}))


def test_compiled_collaborators_are_held_as_their_classes(tmp_path: Any) -> None:
    tracker = ConnectionTracker(lambda: (http1.SPEC,))
    spans = builder()
    red = RedMetrics(make_meter_provider(extra_readers=[InMemoryMetricReader()]))
    peers = PeerResolver(ListenerMap(ProcFS(str(tmp_path))), lambda pid: None)
    own = OwnConnections(lambda: set())
    exported = Exported()
    layering = Layering(Config(), exported.enqueue, lambda: None)
    pipe = Pipeline(SettingsHolder(RuntimeSettings()), tracker, spans.build, exported, metrics=red.record,
                    peers=peers, own=own, linker=layering)
    assert pipe._tracker is tracker and pipe._builder is spans and pipe._red is red
    assert pipe._peers is peers and pipe._own is own and pipe._linker is layering.linker
    pipe.on_call(call())
    layering.linker.flush_all()
    assert len(exported.spans) == 1 and red.recorded == 1


def test_anything_else_is_called_as_it_was_given() -> None:
    """A builder, metrics and linker that are not the compiled classes' own methods (here
    wrappers that count) are called through what was handed in, with the same spans."""
    spans = builder()
    built: list[Call] = []
    recorded: list[tuple[Call, Any]] = []
    offered: list[Call] = []
    exported = Exported()

    def build(c: Call) -> Any:
        built.append(c)
        return spans.build(c)

    class Linker:
        def set_gate(self, gate: Any) -> None:
            self.gate = gate

        def offer(self, c: Call, span: Any, pending: Any = None) -> None:
            offered.append(c)
            if self.gate(c, span, pending, None):
                exported.enqueue(span)

    class Own:
        pids: frozenset[int] = frozenset()

        def is_own(self, address: str, port: int, local_port: int) -> bool:
            return port == 40898

    pipe = Pipeline(SettingsHolder(RuntimeSettings()), NoTracker(), build, exported,
                    metrics=lambda c, s: recorded.append((c, s)), linker=Linker())
    assert (pipe._tracker, pipe._builder, pipe._red, pipe._linker, pipe._own) == (None, None, None, None, None)
    pipe.on_call(call())
    assert len(built) == 1 and len(recorded) == 1 and len(offered) == 1 and len(exported.spans) == 1
    # another SpanBuilder's method is not this one's: called as given
    other = builder()
    assert Pipeline(SettingsHolder(RuntimeSettings()), NoTracker(), other.build, exported)._builder is other
    assert Pipeline(SettingsHolder(RuntimeSettings()), NoTracker(), lambda c: other.build(c), exported)._builder is None
    # an own-connection stand-in still decides
    pipe = Pipeline(SettingsHolder(RuntimeSettings()), NoTracker(), spans.build, exported, own=Own())
    assert pipe._own is None
    pipe.on_call(call())
    assert pipe.own_traffic == 1


def test_the_policy_follows_the_snapshot() -> None:
    """Probes and redaction are read from the snapshot of the moment, once per snapshot."""
    exported = Exported()
    holder = SettingsHolder(RuntimeSettings(probes=frozenset({"http"})))
    pipe = Pipeline(holder, NoTracker(), builder().build, exported)
    first = pipe._policy
    pipe.on_call(call(1))
    pipe.on_call(call(2))
    assert pipe._policy is first and len(exported.spans) == 2
    holder.update(lambda s: RuntimeSettings(probes=frozenset({"postgres"}), redaction=s.redaction))
    pipe.on_call(call(3))
    assert pipe._policy is not first and pipe.dropped["probe_disabled"] == 1 and len(exported.spans) == 2
    holder.update(lambda s: RuntimeSettings(probes=frozenset({"http"}),
                                            redaction=RedactionSettings(pii_detection=False)))
    assert pipe._policy.redacting
    pipe.on_call(call(4))
    assert not pipe._policy.redacting and pipe._policy.mask_sensitive and len(exported.spans) == 3


def test_protocols_enabled_are_remembered_within_bounds() -> None:
    policy = Policy(RuntimeSettings(probes=frozenset({"http2", "postgres"})), b"")
    assert [policy.protocol_enabled(p) for p in ("grpc", "http2", "http", "postgresql", "mysql")] == [
        True, True, False, True, False]
    for i in range(3 * _ENABLED_MAX):
        assert not policy.protocol_enabled(f"made-up-{i}")
        assert len(policy.enabled) <= _ENABLED_MAX
    assert policy.protocol_enabled("grpc") and not policy.protocol_enabled("http")


def test_the_linkers_emit_puts_into_the_export_queue_natively() -> None:
    """The daemon hands the layering its export queue's own ``put`` (QueueSink.put, interpreted,
    only when a console queue takes each span too); SpanOnly calls that queue as the class it is."""
    from hostagent.assembly import QueueSink
    from hostagent.export.memory import InMemoryExporter
    from hostagent.export.queue import ExportQueue
    from hostagent.pipeline import SpanOnly

    queue = ExportQueue([InMemoryExporter()], max_queue=10, batch_size=1000)
    console = ExportQueue([InMemoryExporter()], max_queue=10, batch_size=1000)
    alone, both = QueueSink(queue), QueueSink(queue, console)
    assert alone.put_function() == queue.put and both.put_function() == both.put
    emit = SpanOnly(alone.put_function())
    assert emit._queue is queue and SpanOnly(both.put_function())._queue is None
    span = builder().build(call())
    emit(call(), span)
    SpanOnly(both.put_function())(call(), span)
    assert (queue.stats().enqueued, console.stats().enqueued) == (2, 1)
    queue.shutdown(1)
    console.shutdown(1)


def test_ids_come_from_the_one_generator_a_reseed_changes() -> None:
    from hostagent.traces import ids

    ids._rng.seed(7)
    first = (ids.new_trace_id(), ids.new_span_id())
    ids._rng.seed(7)
    assert (ids.new_trace_id(), ids.new_span_id()) == first
    ids._reseed()
    assert 0 < ids.new_span_id() < 2**64 and 0 < ids.new_trace_id() < 2**128
