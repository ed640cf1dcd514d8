"""AdminServer: the admin API's gRPC server -- Unix socket always, TCP only with mTLS.

    server = AdminServer(holder=..., status=..., reload=..., base_settings=..., state_dir=...,
                         socket_path="/run/hostagent/admin.sock", listen="", tls=None, tap=tap)
    server.start()        # applies runtime.json over the holder, then serves
    ...
    server.stop()

Besides AdminService it serves grpc.health.v1.Health (``set_serving`` mirrors the watchdog) and
server reflection. Requests larger than 16 MiB are refused by gRPC itself (RESOURCE_EXHAUSTED);
anything smaller is checked field by field and refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hostagent.admin.access import group_gid
from hostagent.admin.audit import AUDIT_FILE, AuditLog
from hostagent.admin.changes import ChangeError, validate_capture
from hostagent.admin.servicer import AdminServicer, Reloader, ServicerDeps
from hostagent.admin.state import RuntimeOverrides, StateStore
from hostagent.admin.status import StatusProvider
from hostagent.admin.tap import SpanTap
from hostagent.admin.uds_proxy import UnixCredProxy, make_private_dir
from hostagent.admin.v1 import admin_pb2, admin_pb2_grpc
from hostagent.policy.redaction import load_or_create_key
from hostagent.policy.rules import RuleError, validate_rules
from hostagent.policy.sampling import Sampler
from hostagent.priority import keep_normal, keep_normal_here
from hostagent.settings import RuntimeSettings, SettingsHolder

log = logging.getLogger(__name__)
SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
DEFAULT_PROBES = ("http", "http2", "postgres", "mysql", "redis", "dns")


class AdminConfigError(Exception):
    """The admin listener cannot start as configured; the message says why and what to do."""


@dataclass(frozen=True)
class TlsFiles:
    cert: str  # server certificate (PEM)
    key: str  # its private key (PEM)
    client_ca: str  # CA that signs the client certificates (PEM); clients must present one

    @classmethod
    def from_config(cls, cfg: Any) -> Optional[TlsFiles]:
        """From hostagent.config.AdminTlsConfig (or None)."""
        return None if cfg is None else cls(cfg.cert, cfg.key, cfg.client_ca)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AdminConfigError(f"[admin.tls] {what} {path!r}: {exc.strerror or exc}") from None


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    missing = [name for name in ("cert", "key", "client_ca") if not getattr(tls, name)]
    if missing:
        raise AdminConfigError(f"[admin.tls] needs cert, key and client_ca; missing: {', '.join(missing)}")
    return grpc.ssl_server_credentials(
        [(_read(tls.key, "key"), _read(tls.cert, "cert"))],
        root_certificates=_read(tls.client_ca, "client_ca"),
        require_client_auth=True,
    )


def _checked(overrides: RuntimeOverrides, probe_names: tuple[str, ...]) -> RuntimeOverrides:
    """Drop stored sections that are no longer valid (e.g. a probe this version lacks)."""
    out = overrides
    if out.probes is not None and not out.probes <= set(probe_names):
        log.warning("runtime state: ignoring probes %s (valid: %s)", sorted(out.probes), ", ".join(probe_names))
        out = replace(out, probes=None)
    if out.sampling is not None:
        try:
            Sampler(out.sampling)
        except ValueError as exc:
            log.warning("runtime state: ignoring sampling: %s", exc)
            out = replace(out, sampling=None)
    if out.redaction is not None:
        try:
            validate_rules(out.redaction.rules)
            if out.redaction.mode not in ("redact", "hash"):
                raise RuleError(f"mode {out.redaction.mode!r}")
        except RuleError as exc:
            log.warning("runtime state: ignoring redaction: %s", exc)
            out = replace(out, redaction=None)
    if out.capture is not None:
        try:
            validate_capture(out.capture)
        except ChangeError as exc:
            log.warning("runtime state: ignoring capture: %s", exc)
            out = replace(out, capture=None)
    return out


class AdminServer:
    def __init__(
        self,
        *,
        holder: SettingsHolder,
        status: StatusProvider,
        reload: Reloader,
        base_settings: Callable[[], RuntimeSettings],
        state_dir: Path | str,
        socket_path: Path | str = "/run/hostagent/admin.sock",
        listen: str = "",
        tls: Optional[TlsFiles] = None,
        token: str = "",
        group: str = "hostagent",
        tap: Optional[SpanTap] = None,
        probe_names: tuple[str, ...] = DEFAULT_PROBES,
        socket_mode: int = 0o660,
        redaction_key: Optional[bytes] = None,
    ) -> None:
        if listen and tls is None:
            raise AdminConfigError(
                f"[admin] listen = {listen!r} needs [admin.tls] (cert, key, client_ca): the admin API "
                "changes what the agent captures, so a TCP listener is only started with mutual TLS; "
                "remove 'listen' to use the Unix socket only"
            )
        self.holder = holder
        self.state_dir = Path(state_dir)
        self.socket_path = Path(socket_path)
        self.listen = listen
        self.tls = tls
        self.group = group
        self.socket_mode = socket_mode
        self.tap = tap if tap is not None else SpanTap()
        self.store = StateStore(self.state_dir)
        self.audit = AuditLog(self.state_dir / AUDIT_FILE)
        self.server_id = secrets.token_hex(6)
        self._deps = ServicerDeps(
            holder=holder,
            status=status,
            reload=reload,
            base_settings=base_settings,
            store=self.store,
            audit=self.audit,
            tap=self.tap,
            probe_names=tuple(probe_names),
            redaction_key=redaction_key or load_or_create_key(self.state_dir),
            server_id=self.server_id,
            group=group,
            token=token,
        )
        self.servicer: Optional[AdminServicer] = None
        self.health = health.HealthServicer()
        self.tcp_port: Optional[int] = None
        self._server: Optional[grpc.Server] = None
        self._proxy: Optional[UnixCredProxy] = None
        self._private: Optional[Path] = None

    def apply_saved_state(self) -> RuntimeOverrides:
        """Lay runtime.json over the holder's settings (idempotent)."""
        overrides = _checked(self.store.load(), self._deps.probe_names)
        if overrides.sections:
            new = overrides.apply(self.holder.current)
            if new != self.holder.current:
                self.holder.update(lambda s: overrides.apply(s))
            log.info(
                "admin: re-applied runtime changes to %s from %s",
                ", ".join(overrides.sections),
                self.store.path,
            )
        return overrides

    def reapply_persisted(self, base: RuntimeSettings) -> RuntimeSettings:
        """``base`` (a freshly read config's values) with the runtime changes laid over it.

        Pure: the caller swaps the result into the holder (the daemon's reload does)."""
        overrides = self.servicer.overrides if self.servicer else _checked(self.store.load(), self._deps.probe_names)
        return overrides.apply(base)

    def apply_config(self, base: RuntimeSettings) -> RuntimeSettings:
        """After a config reload: the new config's values with the runtime changes on top."""
        overrides = self.servicer.overrides if self.servicer else RuntimeOverrides()
        merged = overrides.apply(base)
        return self.holder.update(lambda _s: merged)

    def start(self) -> None:
        overrides = self.apply_saved_state()
        self.servicer = AdminServicer(self._deps, overrides)
        # The admin's threads keep SCHED_OTHER at cpu_policy idle (hostagent.priority.keep_normal):
        # they run only while a person waits for an answer, and at SCHED_IDLE beside busy
        # applications each of a call's steps (the proxy, gRPC's serving thread, the handler) waits
        # for scraps of CPU (hostagentctl took seconds; tens in the acceptance run).
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="admin",
                                       initializer=partial(keep_normal_here, "admin")),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=64,
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        self._private = make_private_dir(self.socket_path.parent, ".admin-private-")
        inner = self._private / "grpc.sock"
        server.add_insecure_port(f"unix:{inner}")
        if self.listen:
            assert self.tls is not None
            try:
                self.tcp_port = server.add_secure_port(self.listen, server_credentials(self.tls))
            except RuntimeError as exc:
                raise AdminConfigError(f"[admin] listen = {self.listen!r}: cannot bind: {exc}") from None
        before = {t.ident for t in threading.enumerate()}
        server.start()
        for thread in threading.enumerate():  # gRPC's serving thread: it takes each call from the core
            if thread.ident not in before and thread.name.endswith("(_serve)") and thread.native_id is not None:
                keep_normal(thread.native_id, "admin-grpc")
        self._server = server
        gid = group_gid(self.group)
        if gid is None:
            log.info("admin: group %r does not exist; the admin socket is root-only", self.group)
        self._proxy = UnixCredProxy(self.socket_path, inner, self.server_id, self.socket_mode, gid)
        try:
            self._proxy.start()
        except OSError as exc:
            self.stop()
            raise AdminConfigError(f"[admin] socket {str(self.socket_path)!r}: {exc}") from None
        self.set_serving(True)
        where = f"unix:{self.socket_path}" + (f" and tcp {self.listen} (mTLS)" if self.listen else "")
        log.info("admin API listening on %s", where)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def stop(self, grace: float = 1.0) -> None:
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._server is not None:
            self.health.enter_graceful_shutdown()
            self._server.stop(grace).wait(grace + 1)
            self._server = None
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None


__all__ = ["AdminConfigError", "AdminServer", "TlsFiles"]
