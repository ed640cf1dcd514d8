"""AdminService: each RPC reads or changes the one SettingsHolder, persists, audits.

Changes are serialised by one lock so that the holder, runtime.json and the audit log agree on
the order of changes. The holder is updated with a function of the *current* snapshot that
replaces only the changed section, so a concurrent writer (a config reload) is never undone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import grpc

from hostagent.admin import changes, convert
from hostagent.admin.access import Caller, caller_from_context, token_ok
from hostagent.admin.audit import AuditLog
from hostagent.admin.state import RuntimeOverrides, StateStore
from hostagent.admin.status import AgentStatus, StatusProvider
from hostagent.admin.tap import SpanTap, TapFilter
from hostagent.admin.v1 import admin_pb2 as pb
from hostagent.admin.v1 import admin_pb2_grpc as pb_grpc
from hostagent.policy.redaction import redactor_for
from hostagent.policy.sampling import KNOWN_PROTOCOLS, protocol_name
from hostagent.settings import RedactionRule, RuntimeSettings, SettingsHolder

log = logging.getLogger(__name__)
MAX_TEST_TEXT = 64 * 1024
# How long SetProbeEnabled waits for the daemon to attach/detach (measured: up to 7.5 s to
# re-attach the socket programs on a loaded machine), unless the call's deadline is sooner.
PROBE_APPLY_WAIT_S = 30.0
Reloader = Callable[[], "tuple[bool, str]"]


@dataclass
class ServicerDeps:
    holder: SettingsHolder
    status: StatusProvider
    reload: Reloader
    base_settings: Callable[[], RuntimeSettings]  # the config file's values, for reset
    store: StateStore
    audit: AuditLog
    tap: SpanTap
    probe_names: tuple[str, ...]
    redaction_key: bytes
    server_id: str
    group: str
    token: str = ""


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(self, deps: ServicerDeps, overrides: RuntimeOverrides) -> None:
        self.d = deps
        self.overrides = overrides
        self._lock = threading.Lock()

    # --- access -------------------------------------------------------------------------
    def _caller(self, context: grpc.ServicerContext, action: str, change: bool) -> Caller:
        caller = caller_from_context(context, self.d.server_id, self.d.group)
        if caller.transport == "tcp" and self.d.token and not token_ok(context, self.d.token):
            self.d.audit.record(caller.who, action, None, None, ok=False, error="bad or missing token")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        if caller.transport == "tcp" and not caller.can_change:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
        if change and not caller.can_change:
            self.d.audit.record(caller.who, action, None, None, ok=False, error="permission denied")
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{caller.who} may not change settings: only root and members of group {self.d.group!r} may",
            )
        return caller

    def _status(self) -> AgentStatus:
        try:
            return self.d.status.status()
        except Exception as exc:  # status must answer even when a part of the agent is broken
            log.exception("status provider failed")
            return AgentStatus(healthy=False, exporter_last_error=f"status unavailable: {exc}")

    def _refuse(self, context: grpc.ServicerContext, caller: Caller, action: str, exc: changes.ChangeError) -> NoReturn:
        self.d.audit.record(caller.who, action, None, None, ok=False, error=str(exc))
        context.abort(getattr(grpc.StatusCode, exc.code), str(exc))
        raise AssertionError("unreachable: abort raises")  # grpc stubs do not say NoReturn

    def _change(
        self,
        context: grpc.ServicerContext,
        action: str,
        section: str,
        make: Callable[[RuntimeSettings], Any],
        describe: Callable[[Any], Any],
        request_desc: Any,
    ) -> RuntimeSettings:
        """Validate + apply + persist + audit one change of one section."""
        caller = self._caller(context, action, change=True)
        with self._lock:
            current = self.d.holder.current
            try:
                value = make(current)
            except changes.ChangeError as exc:
                self._refuse(context, caller, action, exc)
            old = describe(getattr(current, section))
            new_settings = self.d.holder.update(lambda s: replace(s, **{section: value}))
            self.overrides = self.overrides.with_section(section, new_settings)
            self.d.store.save(self.overrides)
            self.d.audit.record(caller.who, action, old, {"request": request_desc, "now": describe(value)})
            return new_settings

    # --- reads --------------------------------------------------------------------------
    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        self._caller(context, "GetStatus", change=False)
        return convert.status_msg(
            self._status(), self.d.holder.current, self.d.probe_names, bool(self.overrides.sections)
        )

    def ListProbes(self, request: pb.ListProbesRequest, context: grpc.ServicerContext) -> pb.ListProbesResponse:
        self._caller(context, "ListProbes", change=False)
        return pb.ListProbesResponse(
            probes=convert.probes_msg(self.d.holder.current, self.d.probe_names, self._status())
        )

    def GetSampling(self, request: pb.GetSamplingRequest, context: grpc.ServicerContext) -> pb.Sampling:
        self._caller(context, "GetSampling", change=False)
        return convert.sampling_msg(self.d.holder.current.sampling)

    def ListRedactionRules(self, request: pb.ListRedactionRulesRequest, context: grpc.ServicerContext) -> pb.Redaction:
        self._caller(context, "ListRedactionRules", change=False)
        return convert.redaction_msg(self.d.holder.current.redaction)

    def GetCapture(self, request: pb.GetCaptureRequest, context: grpc.ServicerContext) -> pb.Capture:
        self._caller(context, "GetCapture", change=False)
        return convert.capture_msg(self.d.holder.current.capture)

    def TestRedaction(
        self, request: pb.TestRedactionRequest, context: grpc.ServicerContext
    ) -> pb.TestRedactionResponse:
        self._caller(context, "TestRedaction", change=False)
        if len(request.text) > MAX_TEST_TEXT:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"text longer than {MAX_TEST_TEXT} characters")
        redactor = redactor_for(self.d.holder.current.redaction, self.d.redaction_key)
        text, found = redactor.redact_text(request.text)
        return pb.TestRedactionResponse(text=text, found=found)

    def TailSpans(self, request: pb.TailSpansRequest, context: grpc.ServicerContext) -> Iterator[pb.SpanSummary]:
        self._caller(context, "TailSpans", change=False)
        if request.status not in ("", "ok", "error"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "status must be 'ok' or 'error'")
        if request.min_duration_ms < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "min_duration_ms must be >= 0")
        protocol = protocol_name(request.protocol)
        if protocol and protocol not in KNOWN_PROTOCOLS:  # would match nothing, silently
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown protocol {request.protocol[:64]!r}; valid protocols: {', '.join(KNOWN_PROTOCOLS)}",
            )
        flt = TapFilter(request.service, protocol, request.status, request.min_duration_ms)
        try:
            sub = self.d.tap.subscribe(flt)
        except RuntimeError as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        try:
            while context.is_active():
                item = sub.get(timeout=0.25)
                if item is not None:
                    yield convert.span_msg(*item)
        finally:
            sub.close()

    # --- changes ------------------------------------------------------------------------
    def SetProbeEnabled(
        self, request: pb.SetProbeEnabledRequest, context: grpc.ServicerContext
    ) -> pb.ListProbesResponse:
        verb = "enable" if request.enabled else "disable"
        new = self._change(
            context,
            f"probes.{verb}",
            "probes",
            lambda s: changes.set_probe(s.probes, request.name, request.enabled, self.d.probe_names),
            sorted,
            request.name,
        )
        return pb.ListProbesResponse(probes=convert.probes_msg(new, self.d.probe_names, self._applied_status(context)))

    def _applied_status(self, context: grpc.ServicerContext) -> AgentStatus:
        """The status once the daemon has applied the enabled probes (it attaches and detaches
        on its poll thread, seconds later), so that the answer is the state after the change;
        at the call's deadline (or PROBE_APPLY_WAIT_S), the state as it is then."""
        wait = PROBE_APPLY_WAIT_S
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, remaining - 0.25)  # leave time for the answer itself
        deadline = time.monotonic() + wait
        while True:
            status = self._status()
            applied = status.probes_applied
            if applied is None or applied == self.d.holder.current.probes or time.monotonic() >= deadline:
                return status
            time.sleep(0.05)

    def SetSampling(self, request: pb.SetSamplingRequest, context: grpc.ServicerContext) -> pb.Sampling:
        kwargs: dict[str, Any] = {
            "ratio": request.ratio if request.HasField("ratio") else None,
            "service": request.service,
            "protocol": protocol_name(request.protocol),
            "clear_override": request.clear_override,
            "keep_errors": request.keep_errors if request.HasField("keep_errors") else None,
            "keep_slower_than_ms": (request.keep_slower_than_ms if request.HasField("keep_slower_than_ms") else None),
        }
        new = self._change(
            context,
            "sampling.set",
            "sampling",
            lambda s: changes.set_sampling(s.sampling, **kwargs),
            convert.sampling_summary,
            {k: v for k, v in kwargs.items() if v not in (None, "", False)},
        )
        return convert.sampling_msg(new.sampling)

    def AddRedactionRule(self, request: pb.AddRedactionRuleRequest, context: grpc.ServicerContext) -> pb.Redaction:
        rule = RedactionRule(request.rule.name, request.rule.pattern, request.rule.mode or "redact")
        new = self._change(
            context,
            "redaction.add",
            "redaction",
            lambda s: changes.add_rule(s.redaction, rule),
            convert.redaction_summary,
            {"name": rule.name[:64], "pattern": rule.pattern[:256], "mode": rule.mode[:16]},
        )
        return convert.redaction_msg(new.redaction)

    def RemoveRedactionRule(
        self, request: pb.RemoveRedactionRuleRequest, context: grpc.ServicerContext
    ) -> pb.Redaction:
        new = self._change(
            context,
            "redaction.remove",
            "redaction",
            lambda s: changes.remove_rule(s.redaction, request.name),
            convert.redaction_summary,
            request.name[:64],
        )
        return convert.redaction_msg(new.redaction)

    def SetPiiDetection(self, request: pb.SetPiiDetectionRequest, context: grpc.ServicerContext) -> pb.Redaction:
        new = self._change(
            context,
            "redaction.pii",
            "redaction",
            lambda s: changes.set_pii(s.redaction, request.enabled, request.mode),
            convert.redaction_summary,
            {"enabled": request.enabled, "mode": request.mode[:16]},
        )
        return convert.redaction_msg(new.redaction)

    def SetCapture(self, request: pb.SetCaptureRequest, context: grpc.ServicerContext) -> pb.Capture:
        kwargs: dict[str, Any] = {
            name: getattr(request, name) if request.HasField(name) else None
            for name in ("headers", "bodies", "body_max_bytes", "raw_sql")
        }
        kwargs.update(service=request.service, protocol=protocol_name(request.protocol),
                      clear_override=request.clear_override)  # fmt: skip
        new = self._change(
            context,
            "capture.clear" if request.clear_override else "capture.set",
            "capture",
            lambda s: changes.set_capture(s.capture, **kwargs),
            convert.capture_summary,
            {k: (v[:64] if isinstance(v, str) else v) for k, v in kwargs.items() if v not in (None, "", False)},
        )
        return convert.capture_msg(new.capture)

    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        caller = self._caller(context, "reload", change=True)
        with self._lock:
            try:
                ok, error = self.d.reload()
            except Exception as exc:  # a reload bug must not take the admin API down
                log.exception("reload failed")
                ok, error = False, f"reload failed: {exc}"
            self.d.audit.record(caller.who, "reload", None, None, ok=ok, error=error)
            return pb.ReloadResponse(ok=ok, error=error, settings_generation=self.d.holder.current.generation)

    def Reset(self, request: pb.ResetRequest, context: grpc.ServicerContext) -> pb.ResetResponse:
        caller = self._caller(context, "reset", change=True)
        with self._lock:
            sections = self.overrides.sections
            base = self.d.base_settings()
            old = {name: _describe(name, getattr(self.d.holder.current, name)) for name in sections}
            new = self.d.holder.update(
                lambda s: replace(
                    s, probes=base.probes, sampling=base.sampling, redaction=base.redaction, capture=base.capture
                )
            )
            self.overrides = RuntimeOverrides()
            self.d.store.clear()
            self.d.audit.record(
                caller.who, "reset", old, {name: _describe(name, getattr(new, name)) for name in sections}
            )
            return pb.ResetResponse(reset=list(sections), settings_generation=new.generation)


def _describe(section: str, value: Any) -> Any:
    if section == "probes":
        return sorted(value)
    if section == "sampling":
        return convert.sampling_summary(value)
    if section == "capture":
        return convert.capture_summary(value)
    return convert.redaction_summary(value)
