"""The admin server in-process on a Unix socket, driven over a real gRPC channel."""

from __future__ import annotations

import json
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from hostagent.admin.server import AdminConfigError, AdminServer, TlsFiles
from hostagent.admin.status import AgentStatus, LayeringStatus, ProbeStatus, StaticStatus
from hostagent.admin.tap import SpanSummary
from hostagent.admin.v1 import admin_pb2 as pb
from hostagent.settings import CaptureOverride, CaptureSettings, RuntimeSettings, SamplingSettings, SettingsHolder

from .admin_harness import BASE, STATUS, running, world_dir

T = 5  # seconds per call


@pytest.fixture
def base_dir():
    with world_dir() as d:
        yield d


def code_of(fn, *args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        fn(*args, timeout=T)
    return exc.value.code(), exc.value.details()


def test_status_merges_provider_and_settings(base_dir: Path) -> None:
    with running(base_dir) as h:
        st = h.stub().GetStatus(pb.GetStatusRequest(), timeout=T)
        assert (st.version, st.kernel_release, st.spans_exported) == ("9.9.9-test", "6.18.0-test", 42)
        assert dict(st.drops) == {"ring_buffer": 3, "export_queue": 0}
        assert dict(st.redacted) == {"email": 7}
        assert [(p.name, p.enabled, p.state) for p in st.probes] == [
            ("http", True, "attached"),
            ("http2", False, "unknown"),
            ("postgres", False, "unknown"),
            ("mysql", False, "unknown"),
            ("redis", False, "unknown"),
            ("dns", True, "failed"),
        ]
        assert st.probes[5].reason == "no tracepoint sys_enter_sendmmsg"
        assert st.sampling.ratio == 1.0 and st.redaction.pii_detection is True
        assert "email" in st.redaction.detectors and st.runtime_overrides is False


def second_server(base_dir: Path, socket_path: Path) -> AdminServer:
    return AdminServer(holder=SettingsHolder(BASE), status=StaticStatus(STATUS), reload=lambda: (True, ""),
                       base_settings=lambda: BASE, state_dir=base_dir / "s2", socket_path=socket_path)  # fmt: skip


def test_socket_is_0660_and_replaced_when_stale(base_dir: Path) -> None:
    with running(base_dir) as h:
        mode = stat.S_IMODE(h.socket.stat().st_mode)
        assert mode == 0o660 and stat.S_ISSOCK(h.socket.stat().st_mode)
        with pytest.raises(AdminConfigError, match="another agent is already listening"):
            second_server(base_dir, h.socket).start()
        # the refused start left the running agent's socket alone (it removed it: the running
        # agent could no longer be reached)
        assert stat.S_ISSOCK(h.socket.stat().st_mode)
        assert h.stub().GetStatus(pb.GetStatusRequest(), timeout=T).version == "9.9.9-test"
    assert not h.socket.exists()


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_socket_path_that_is_not_a_socket_is_refused_and_left_alone(base_dir: Path, kind: str) -> None:
    """[admin] socket naming the config file by mistake: the start was refused, then the refusal's
    clean-up deleted that file (a directory, such as the "." that socket = "" named, failed the
    clean-up with IsADirectoryError, a traceback in place of the refusal)."""
    path = base_dir / "hostagent.toml"
    if kind == "file":
        path.write_text("[agent]\n")
    else:
        path.mkdir()
    with pytest.raises(AdminConfigError) as exc:
        second_server(base_dir, path).start()
    assert str(exc.value) == f"[admin] socket {str(path)!r}: {path} exists and is not a socket; refusing to replace it"
    assert path.read_text() == "[agent]\n" if kind == "file" else path.is_dir()


def test_probe_enable_disable_and_unknown(base_dir: Path) -> None:
    with running(base_dir) as h:
        api = h.stub()
        resp = api.SetProbeEnabled(pb.SetProbeEnabledRequest(name="redis", enabled=True), timeout=T)
        assert [p.name for p in resp.probes if p.enabled] == ["http", "redis", "dns"]
        assert h.holder.current.probes == {"http", "redis", "dns"}
        api.SetProbeEnabled(pb.SetProbeEnabledRequest(name="http", enabled=False), timeout=T)
        assert h.holder.current.probes == {"redis", "dns"}
        gen = h.holder.current.generation
        code, details = code_of(api.SetProbeEnabled, pb.SetProbeEnabledRequest(name="kafka", enabled=True))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == "unknown probe 'kafka'; valid probes: http, http2, postgres, mysql, redis, dns"
        assert h.holder.current.generation == gen
        listed = api.ListProbes(pb.ListProbesRequest(), timeout=T)
        assert [p.name for p in listed.probes if p.enabled] == ["redis", "dns"]


class SlowDaemon:
    """A status provider like the daemon's: the probes are attached/detached on another thread,
    ``delay`` seconds after the settings changed (never, with None)."""

    def __init__(self, holder: SettingsHolder, delay: float | None) -> None:
        self.value = replace(STATUS, probes_applied=holder.current.probes, probes=self._states(holder.current.probes))
        if delay is not None:
            holder.subscribe(lambda old, new: threading.Timer(delay, self._apply, (new.probes,)).start())

    @staticmethod
    def _states(enabled: frozenset[str]) -> tuple[ProbeStatus, ...]:
        return tuple(ProbeStatus(n, "attached" if n in enabled else "detached") for n in ("http", "redis", "dns"))

    def _apply(self, enabled: frozenset[str]) -> None:
        self.value = replace(self.value, probes=self._states(enabled), probes_applied=enabled)

    def status(self) -> AgentStatus:
        return self.value


def test_probe_change_answers_with_the_state_after_it(base_dir: Path) -> None:
    holder = SettingsHolder(BASE)
    with running(base_dir, holder=holder, status=SlowDaemon(holder, 0.4)) as h:
        api = h.stub()
        t0 = time.monotonic()
        resp = api.SetProbeEnabled(pb.SetProbeEnabledRequest(name="redis", enabled=True), timeout=T)
        assert time.monotonic() - t0 >= 0.4
        states = {p.name: (p.enabled, p.state) for p in resp.probes}
        assert (states["redis"], states["http"]) == ((True, "attached"), (True, "attached"))
        resp = api.SetProbeEnabled(pb.SetProbeEnabledRequest(name="http", enabled=False), timeout=T)
        assert {p.name: (p.enabled, p.state) for p in resp.probes}["http"] == (False, "detached")


def test_probe_change_not_applied_by_the_deadline_answers_the_state_then(base_dir: Path) -> None:
    holder = SettingsHolder(BASE)
    with running(base_dir, holder=holder, status=SlowDaemon(holder, None)) as h:
        t0 = time.monotonic()
        resp = h.stub().SetProbeEnabled(pb.SetProbeEnabledRequest(name="redis", enabled=True), timeout=1.0)
        assert 0.5 < time.monotonic() - t0 < 1.0  # an answer, not DEADLINE_EXCEEDED
        assert {p.name: (p.enabled, p.state) for p in resp.probes}["redis"] == (True, "detached")
        assert holder.current.probes == {"http", "redis", "dns"}


def test_sampling_set_get_and_refusals(base_dir: Path) -> None:
    with running(base_dir) as h:
        api = h.stub()
        api.SetSampling(pb.SetSamplingRequest(ratio=0.25), timeout=T)
        api.SetSampling(pb.SetSamplingRequest(ratio=1.0, service="checkout"), timeout=T)
        api.SetSampling(pb.SetSamplingRequest(ratio=0.0, protocol="dns"), timeout=T)
        got = api.SetSampling(pb.SetSamplingRequest(keep_errors=True, keep_slower_than_ms=500), timeout=T)
        assert got == api.GetSampling(pb.GetSamplingRequest(), timeout=T)
        assert h.holder.current.sampling == SamplingSettings(0.25, (("checkout", 1.0),), (("dns", 0.0),), True, 500.0)
        before = (h.holder.current, (h.state_dir / "runtime.json").read_text())
        for req, msg in [
            (pb.SetSamplingRequest(ratio=1.5), "ratio must be between 0 and 1, got 1.5"),
            (pb.SetSamplingRequest(ratio=0.5, protocol="kafka"), "unknown protocol 'kafka'"),
            (pb.SetSamplingRequest(), "nothing to change"),
        ]:
            code, details = code_of(api.SetSampling, req)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and msg in details
        assert (h.holder.current, (h.state_dir / "runtime.json").read_text()) == before


def test_redaction_rules_pii_and_test(base_dir: Path) -> None:
    with running(base_dir) as h:
        api = h.stub()
        rule = pb.RedactionRule(name="customer", pattern=r"cust-(\d+)", mode="redact")
        resp = api.AddRedactionRule(pb.AddRedactionRuleRequest(rule=rule), timeout=T)
        assert [(r.name, r.pattern, r.mode) for r in resp.rules] == [("customer", r"cust-(\d+)", "redact")]
        tested = api.TestRedaction(pb.TestRedactionRequest(text="cust-77 a@b.io"), timeout=T)
        assert tested.text == "cust-[REDACTED:customer] [REDACTED:email]"
        assert dict(tested.found) == {"customer": 1, "email": 1}
        code, _ = code_of(api.AddRedactionRule, pb.AddRedactionRuleRequest(rule=rule))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        for pattern, msg in [
            ("(x", "invalid regular expression"),
            ("(a+)+", "nested unbounded"),
            ("a" * (10 * 1024 * 1024), "10485760 bytes; the limit is 4096"),
        ]:
            bad = pb.RedactionRule(name="bad", pattern=pattern)
            code, details = code_of(api.AddRedactionRule, pb.AddRedactionRuleRequest(rule=bad))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and msg in details
        huge = pb.RedactionRule(name="huge", pattern="a" * (17 * 1024 * 1024))
        code, _ = code_of(api.AddRedactionRule, pb.AddRedactionRuleRequest(rule=huge))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED  # above the 16 MiB message limit
        assert [r.name for r in h.holder.current.redaction.rules] == ["customer"]
        resp = api.SetPiiDetection(pb.SetPiiDetectionRequest(enabled=False), timeout=T)
        assert resp.pii_detection is False and resp.mode == "redact"
        assert api.TestRedaction(pb.TestRedactionRequest(text="a@b.io"), timeout=T).text == "a@b.io"
        resp = api.SetPiiDetection(pb.SetPiiDetectionRequest(enabled=True, mode="hash"), timeout=T)
        assert api.TestRedaction(pb.TestRedactionRequest(text="a@b.io"), timeout=T).text.startswith("[HASHED:email:")
        resp = api.RemoveRedactionRule(pb.RemoveRedactionRuleRequest(name="customer"), timeout=T)
        assert list(resp.rules) == []
        code, details = code_of(api.RemoveRedactionRule, pb.RemoveRedactionRuleRequest(name="customer"))
        assert code == grpc.StatusCode.NOT_FOUND


def test_changes_persist_across_restart_and_reset_restores_config(base_dir: Path) -> None:
    with running(base_dir) as h:
        api = h.stub()
        api.SetProbeEnabled(pb.SetProbeEnabledRequest(name="postgres", enabled=True), timeout=T)
        api.SetSampling(pb.SetSamplingRequest(ratio=0.1), timeout=T)
        doc = json.loads((h.state_dir / "runtime.json").read_text())
        assert doc == {
            "format": 1,
            "probes": ["dns", "http", "postgres"],
            "sampling": {
                "keep_errors": False,
                "keep_slower_than_ms": None,
                "per_protocol": [],
                "per_service": [],
                "ratio": 0.1,
            },
        }
    # A new process: the holder starts from the config file's values.
    with running(base_dir) as h2:
        assert h2.holder.current.probes == {"http", "dns", "postgres"}
        assert h2.holder.current.sampling.ratio == 0.1
        assert h2.holder.current.redaction == BASE.redaction
        st = h2.stub().GetStatus(pb.GetStatusRequest(), timeout=T)
        assert st.runtime_overrides is True
        reset = h2.stub().Reset(pb.ResetRequest(), timeout=T)
        assert list(reset.reset) == ["probes", "sampling"]
        assert h2.holder.current.probes == BASE.probes and h2.holder.current.sampling == BASE.sampling
        assert not (h2.state_dir / "runtime.json").exists()
    with running(base_dir) as h3:
        assert h3.holder.current.probes == BASE.probes


def test_apply_config_keeps_runtime_changes(base_dir: Path) -> None:
    with running(base_dir) as h:
        h.stub().SetSampling(pb.SetSamplingRequest(ratio=0.2), timeout=T)
        new_base = RuntimeSettings(probes=frozenset({"mysql"}), sampling=SamplingSettings(ratio=0.9))
        h.server.apply_config(new_base)
        assert h.holder.current.probes == {"mysql"}  # not changed at runtime: follows the file
        assert h.holder.current.sampling.ratio == 0.2  # changed at runtime: kept


def test_reload_reports_errors(base_dir: Path) -> None:
    with running(base_dir) as h:
        assert h.stub().Reload(pb.ReloadRequest(), timeout=T).ok is True
        h.reload_result = (False, "/etc/hostagent/hostagent.toml: sampling.ratio: expected 0..1")
        resp = h.stub().Reload(pb.ReloadRequest(), timeout=T)
        assert (resp.ok, resp.error) == (False, "/etc/hostagent/hostagent.toml: sampling.ratio: expected 0..1")
        assert len(h.reloads) == 2
        assert [(a["action"], a["ok"]) for a in h.audit()] == [("reload", True), ("reload", False)]


def test_audit_lines_say_who_what_old_new(base_dir: Path) -> None:
    with running(base_dir) as h:
        h.stub().SetSampling(pb.SetSamplingRequest(ratio=0.5), timeout=T)
        code_of(h.stub().SetSampling, pb.SetSamplingRequest(ratio=2.0))
        lines = h.audit()
        assert len(lines) == 2
        ok, refused = lines
        assert ok["who"].startswith("uid=0(root) pid=") and ok["action"] == "sampling.set"
        assert ok["old"]["ratio"] == 1.0 and ok["new"]["now"]["ratio"] == 0.5
        assert ok["new"]["request"] == {"ratio": 0.5}
        assert refused["ok"] is False and "between 0 and 1" in refused["error"]


def test_tail_refuses_an_unknown_protocol(base_dir: Path) -> None:
    with running(base_dir) as h:
        stream = h.stub().TailSpans(pb.TailSpansRequest(protocol="nosuch"), timeout=T)
        with pytest.raises(grpc.RpcError) as exc:
            next(stream)
        assert (exc.value.code(), exc.value.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown protocol 'nosuch'; valid protocols: http, http2, grpc, postgresql, mysql, redis, dns",
        )
        assert h.tap.subscribers == 0


def test_tail_streams_filtered_spans(base_dir: Path) -> None:
    with running(base_dir) as h:
        stream = h.stub().TailSpans(pb.TailSpansRequest(protocol="redis", min_duration_ms=5), timeout=10)

        def publish() -> None:
            while h.tap.subscribers == 0:
                time.sleep(0.01)
            for n, (proto, ms) in enumerate([("http", 50), ("redis", 1), ("redis", 7), ("redis", 9)]):
                h.tap.publish(SpanSummary(f"{n:032x}", f"{n:016x}", "GET", "cart", proto, "client", 0, ms, "ok"))

        threading.Thread(target=publish).start()
        got = [next(stream), next(stream)]
        stream.cancel()
        assert [(s.span_id, s.duration_ms, s.protocol) for s in got] == [
            (f"{2:016x}", 7.0, "redis"),
            (f"{3:016x}", 9.0, "redis"),
        ]
        deadline = time.time() + 3
        while h.tap.subscribers and time.time() < deadline:
            time.sleep(0.02)
        assert h.tap.subscribers == 0 and h.tap.active is False


def test_health_and_reflection(base_dir: Path) -> None:
    with running(base_dir) as h:
        channel = grpc.insecure_channel(f"unix:{h.socket}")
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "hostagent.admin.v1.AdminService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=T)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        h.server.set_serving(False)
        resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=T)
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = sorted(s.name for s in answer.list_services_response.service)
        assert names == [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "hostagent.admin.v1.AdminService",
        ]


def test_tcp_without_tls_is_refused(base_dir: Path) -> None:
    with pytest.raises(AdminConfigError, match=r"listen = '127.0.0.1:18701' needs \[admin.tls\]"):
        AdminServer(
            holder=SettingsHolder(BASE),
            status=StaticStatus(STATUS),
            reload=lambda: (True, ""),
            base_settings=lambda: BASE,
            state_dir=base_dir,
            listen="127.0.0.1:18701",
        )
    with pytest.raises(AdminConfigError, match="missing: client_ca"):
        with running(base_dir, listen="127.0.0.1:18701", tls=TlsFiles("/x.pem", "/x.key", "")):
            pass


def test_invalid_saved_state_is_ignored(base_dir: Path) -> None:
    state = base_dir / "state"
    state.mkdir()
    (state / "runtime.json").write_text(
        json.dumps({"format": 1, "probes": ["http", "kafka"], "sampling": {"ratio": 7}})
    )
    with running(base_dir) as h:
        assert h.holder.current.probes == BASE.probes and h.holder.current.sampling == BASE.sampling


def test_capture_set_get_persist_and_refusals(base_dir: Path) -> None:
    with running(base_dir) as h:
        api = h.stub()
        assert api.GetCapture(pb.GetCaptureRequest(), timeout=T) == pb.Capture(headers=True, body_max_bytes=1024)
        api.SetCapture(pb.SetCaptureRequest(raw_sql=True, body_max_bytes=4096), timeout=T)
        api.SetCapture(pb.SetCaptureRequest(bodies=True, service="tests.support.http_app"), timeout=T)
        got = api.SetCapture(pb.SetCaptureRequest(headers=False, body_max_bytes=0, protocol="grpc"), timeout=T)
        assert got == api.GetCapture(pb.GetCaptureRequest(), timeout=T)
        assert h.holder.current.capture == CaptureSettings(
            headers=True, bodies=False, body_max_bytes=4096, raw_sql=True,
            overrides=(CaptureOverride(service="tests.support.http_app", bodies=True),
                       CaptureOverride(protocol="grpc", headers=False, body_max_bytes=0)),
        )
        assert [(o.service, o.protocol, o.HasField("headers"), o.HasField("body_max_bytes")) for o in got.overrides] \
            == [("tests.support.http_app", "*", False, False), ("*", "grpc", True, True)]
        before = (h.holder.current, (h.state_dir / "runtime.json").read_text())
        for req, msg in [
            (pb.SetCaptureRequest(body_max_bytes=-1), "body_max_bytes must be between 0 and 1048576, got -1"),
            (pb.SetCaptureRequest(body_max_bytes=1 << 40), "body_max_bytes must be between 0 and 1048576"),
            (pb.SetCaptureRequest(headers=True, protocol="kafka"), "unknown protocol 'kafka'"),
            (pb.SetCaptureRequest(raw_sql=False, service="x"), "raw_sql applies to every service and protocol"),
            (pb.SetCaptureRequest(), "nothing to change"),
            (pb.SetCaptureRequest(headers=True, service="a\x00b"), "service name must be"),
        ]:
            code, details = code_of(api.SetCapture, req)
            assert (code, msg in details) == (grpc.StatusCode.INVALID_ARGUMENT, True), details
        code, details = code_of(api.SetCapture, pb.SetCaptureRequest(service="nobody", clear_override=True))
        assert code == grpc.StatusCode.NOT_FOUND
        assert (h.holder.current, (h.state_dir / "runtime.json").read_text()) == before
        audit = h.audit()
        assert [(a["action"], a["ok"]) for a in audit] == [("capture.set", True)] * 3 + [("capture.set", False)] * 6 + [
            ("capture.clear", False)
        ]
        assert audit[1]["old"]["overrides"] == [] and audit[1]["new"]["request"] == {
            "bodies": True, "service": "tests.support.http_app"}
        assert audit[1]["new"]["now"]["overrides"] == [
            {"service": "tests.support.http_app", "protocol": "*", "bodies": True}]
        st = api.GetStatus(pb.GetStatusRequest(), timeout=T)
        assert st.capture == got and st.runtime_overrides is True
    with running(base_dir) as h2:  # restarted: the runtime capture settings came back
        assert h2.holder.current.capture == before[0].capture
        api = h2.stub()
        cleared = api.SetCapture(pb.SetCaptureRequest(protocol="grpc", clear_override=True), timeout=T)
        assert [o.service for o in cleared.overrides] == ["tests.support.http_app"]
        assert list(api.Reset(pb.ResetRequest(), timeout=T).reset) == ["capture"]
        assert h2.holder.current.capture == BASE.capture
        assert not (h2.state_dir / "runtime.json").exists()
        assert h2.audit()[-1]["old"]["capture"]["raw_sql"] is True
        assert h2.audit()[-1]["new"]["capture"]["raw_sql"] is False


def test_capture_change_keeps_other_sections_following_the_config(base_dir: Path) -> None:
    with running(base_dir) as h:
        h.stub().SetCapture(pb.SetCaptureRequest(bodies=True), timeout=T)
        doc = json.loads((h.state_dir / "runtime.json").read_text())
        assert doc == {"format": 1, "capture": {"headers": True, "bodies": True, "body_max_bytes": 1024,
                                                "raw_sql": False, "overrides": []}}
        h.server.apply_config(RuntimeSettings(probes=frozenset({"mysql"}), capture=CaptureSettings(headers=False)))
        assert h.holder.current.probes == {"mysql"}
        assert h.holder.current.capture == CaptureSettings(bodies=True)  # changed at runtime: kept


def test_invalid_saved_capture_is_ignored(base_dir: Path) -> None:
    state = base_dir / "state"
    state.mkdir()
    capture = {"headers": True, "bodies": True, "body_max_bytes": 1024,
               "overrides": [{"service": "s", "protocol": "kafka", "bodies": True}]}
    (state / "runtime.json").write_text(json.dumps({"format": 1, "probes": ["dns"], "capture": capture}))
    with running(base_dir) as h:
        assert h.holder.current.capture == BASE.capture and h.holder.current.probes == {"dns"}


def test_status_has_the_layering_section(base_dir: Path) -> None:
    with running(base_dir) as h:
        st = h.stub().GetStatus(pb.GetStatusRequest(), timeout=T)
        assert st.layering == pb.Layering()  # no layering reported: all zero
        assert h.server.servicer is not None
        h.server.servicer.d.status = StaticStatus(replace(STATUS, layering=LayeringStatus(
            receiver_enabled=True, linking_enabled=True, held_sdk_spans=2, held_agent_spans=1,
            counters={"received_traces": 4, "sdk_spans_received": 9, "sdk_spans_enriched": 5,
                      "agent_spans_deduplicated": 5, "forwarded_traces": 4, "thread_links": 1, "peer_links": 2})))
        ly = h.stub().GetStatus(pb.GetStatusRequest(), timeout=T).layering
        assert (ly.sdk_requests_received, ly.sdk_spans_received, ly.sdk_spans_enriched, ly.duplicates_dropped,
                ly.sdk_spans_held, ly.agent_spans_held, ly.requests_forwarded, ly.hold_overflow, ly.thread_links,
                ly.peer_links) == (4, 9, 5, 5, 2, 1, 4, 0, 1, 2)
        assert dict(ly.counters)["agent_spans_deduplicated"] == 5


def test_a_probes_name_stands_for_its_protocol_over_the_api(base_dir: Path) -> None:
    """hostagentctl maps `--protocol postgres` to postgresql itself; any other API client sending
    the probe's name got INVALID_ARGUMENT (tail, sampling, capture set) where the CLI worked. The
    server now maps it with the same table (hostagent.policy.sampling.PROTOCOL_ALIASES)."""
    with running(base_dir) as h:
        api = h.stub()
        api.SetSampling(pb.SetSamplingRequest(ratio=0.5, protocol="postgres"), timeout=T)
        assert h.holder.current.sampling.per_protocol == (("postgresql", 0.5),)
        api.SetCapture(pb.SetCaptureRequest(bodies=True, protocol="postgres"), timeout=T)
        assert h.holder.current.capture.overrides == (CaptureOverride(protocol="postgresql", bodies=True),)
        assert [(a["action"], a["ok"], a["new"]["request"]["protocol"]) for a in h.audit()] == [
            ("sampling.set", True, "postgresql"), ("capture.set", True, "postgresql")]  # fmt: skip
        api.SetSampling(pb.SetSamplingRequest(protocol="postgres", clear_override=True), timeout=T)
        api.SetCapture(pb.SetCaptureRequest(protocol="postgres", clear_override=True), timeout=T)
        assert (h.holder.current.sampling.per_protocol, h.holder.current.capture.overrides) == ((), ())

        stream = h.stub().TailSpans(pb.TailSpansRequest(protocol="postgres"), timeout=10)

        def publish() -> None:
            while h.tap.subscribers == 0:
                time.sleep(0.01)
            for n, proto in enumerate(["http", "postgresql", "redis", "postgresql"]):
                h.tap.publish(SpanSummary(f"{n:032x}", f"{n:016x}", "SELECT", "shop", proto, "client", 0, 1.0, "ok"))

        threading.Thread(target=publish).start()
        got = [next(stream), next(stream)]
        stream.cancel()
        assert [(s.span_id, s.protocol) for s in got] == [(f"{1:016x}", "postgresql"), (f"{3:016x}", "postgresql")]

        for call, req in [
            (api.SetSampling, pb.SetSamplingRequest(ratio=0.5, protocol="postgre")),
            (api.SetCapture, pb.SetCaptureRequest(bodies=True, protocol="postgre")),
        ]:
            assert code_of(call, req) == (grpc.StatusCode.INVALID_ARGUMENT,
                                          "unknown protocol 'postgre'; valid protocols: http, http2, grpc, "
                                          "postgresql, mysql, redis, dns")  # fmt: skip
        with pytest.raises(grpc.RpcError) as exc:
            next(h.stub().TailSpans(pb.TailSpansRequest(protocol="postgre"), timeout=T))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
