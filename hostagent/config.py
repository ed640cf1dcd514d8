"""The config file (TOML) and the OTEL_EXPORTER_OTLP_* variables that override it.

``load_config(path)`` returns a frozen ``Config`` or raises ``ConfigError`` whose message names
the file, the key and what was expected -- never a traceback. Unknown keys are errors too: a typo
in a config file must not silently fall back to a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import tomli

from hostagent.policy.sampling import KNOWN_PROTOCOLS, protocol_name
from hostagent.probes.registry import DATA_HOOKS
from hostagent.settings import CaptureOverride, CaptureSettings, RedactionRule, RedactionSettings, SamplingSettings

PROBE_NAMES = ("http", "http2", "postgres", "mysql", "redis", "dns")


class ConfigError(Exception):
    """A config problem, worded for the user: file, key, what was expected."""


@dataclass(frozen=True)
class AgentConfig:
    state_dir: str = "/var/lib/hostagent"
    runtime_dir: str = "/run/hostagent"
    log_level: str = "info"
    kernel_headers: str = ""
    console: str = "auto"
    nice: int = 10  # hostagent.priority: under CPU contention the traced applications come first
    cpu_policy: str = "idle"  # hostagent.priority: idle (SCHED_IDLE) | normal (SCHED_OTHER at nice)
    overload_duty: float = 0.2  # hostagent.overload: share of the time it works while hopelessly behind
    starved_after_ms: int = 1000  # hostagent.starvation: work waiting this long raises the idle agent; 0 off


@dataclass(frozen=True)
class ExporterConfig:
    endpoint: str = "http://127.0.0.1:4317"
    # True when the endpoint came from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: for http/protobuf the
    # spec says a signal-specific URL is used as-is (no "/v1/traces" appended).
    endpoint_is_signal_specific: bool = False
    protocol: str = "grpc"
    timeout_ms: int = 10000
    compression: str = "none"
    headers: tuple[tuple[str, str], ...] = ()
    certificate: str = ""
    client_certificate: str = ""
    client_key: str = ""
    insecure: Optional[bool] = None
    queue_size: int = 8192
    batch_size: int = 512
    metrics: bool = True
    metrics_interval_s: int = 15
    # OTLP/gRPC spans sent by a process of its own (hostagent.export.process), handed encoded
    # batches: its own GIL and CPU slot, away from the poll thread. Off: on the 2-vCPU bench host
    # it cost ~2.5 us more CPU per span and lost spans to export_queue_full more often (bench/README,
    # twenty-first round)
    process: bool = False


@dataclass(frozen=True)
class AdminTlsConfig:
    cert: str = ""
    key: str = ""
    client_ca: str = ""


@dataclass(frozen=True)
class AdminConfig:
    socket: str = "/run/hostagent/admin.sock"
    listen: str = ""
    token: str = ""
    group: str = "hostagent"
    tls: Optional[AdminTlsConfig] = None


@dataclass(frozen=True)
class ProbesConfig:
    enabled: tuple[str, ...] = ("http",)
    payload_bytes: int = 4096
    ring_buffer_mib: int = 2  # 2 MiB: stays warm in a 2 MiB L2 (bench/README "ring size")
    data_hooks: str = "auto"  # "auto" | "socket" | "syscalls" (hostagent/probes/data_path.py)


@dataclass(frozen=True)
class CaptureConfig:
    """[capture]: ``runtime`` is what the admin API can change while the agent runs (its
    starting point); the rest holds until a reload."""

    runtime: CaptureSettings = field(default_factory=CaptureSettings)
    # Whole traces without SDKs (hostagent.traces.linking): thread-per-request parents and
    # client -> server links between local processes; spans wait at most link_hold_ms for them.
    link_traces: bool = True
    link_hold_ms: int = 1500
    # Trace the calls that carry telemetry (OTLP, Jaeger, Zipkin exports): off, as OpenTelemetry
    # SDKs leave their own exporters untraced; on a host with a collector they would feed back.
    telemetry_calls: bool = False


@dataclass(frozen=True)
class ReceiverConfig:
    grpc: str = ""
    http: str = ""
    hold_ms: int = 1500
    # Agent spans of a process known to export through the receiver wait this long for its SDK
    # span (SDK batch processors export every 5 s by default).
    sdk_wait_ms: int = 6000
    max_held_spans: int = 20000  # SDK spans held waiting for their wire call
    max_held_bytes: int = 32 << 20  # and their requests' encoded size


@dataclass(frozen=True)
class Config:
    path: str = "<defaults>"
    agent: AgentConfig = field(default_factory=AgentConfig)
    exporter: ExporterConfig = field(default_factory=ExporterConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    # [sampling] and [redaction] are runtime settings as a whole: the file gives their starting
    # point, in the very types the admin API changes (one set of fields, nothing copied across).
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    redaction: RedactionSettings = field(default_factory=RedactionSettings)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    services: tuple[dict[str, Any], ...] = ()  # raw [[services]] rules; identity validates them


class _Reader:
    """Reads one TOML table, checking types and recording which keys were used."""

    def __init__(self, path: str, section: str, table: Any) -> None:
        self.path, self.section = path, section
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table, got {_kind(table)}")
        self.table: dict[str, Any] = table
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.section}.{name}"

    def fail(self, name: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"{self.path}: {self.key(name)}: expected {expected}, got {got!r}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any, expected: str) -> Any:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind is not bool and kind != (bool,):
            raise self.fail(name, expected, value)
        if not isinstance(value, kind):
            raise self.fail(name, expected, value)
        return value

    def string(self, name: str, default: str, choices: Optional[tuple[str, ...]] = None) -> str:
        expected = "one of " + ", ".join(f'"{c}"' for c in choices) if choices else "a string"
        value = self.get(name, str, default, expected)
        if choices and value not in choices:
            raise self.fail(name, expected, value)
        return str(value)

    def boolean(self, name: str, default: bool) -> bool:
        return bool(self.get(name, bool, default, "true or false"))

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        expected = f"an integer from {low} to {high}"
        value = self.get(name, int, default, expected)
        if not low <= value <= high:
            raise self.fail(name, expected, value)
        return int(value)

    def number(self, name: str, default: Optional[float], low: float, high: float) -> Optional[float]:
        expected = f"a number from {low:g} to {high:g}"
        value = self.get(name, (int, float), default, expected)
        if value is None:
            return None
        if not low <= value <= high:
            raise self.fail(name, expected, value)
        return float(value)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ConfigError(
                f"{self.path}: unknown key {self.key(unknown[0])!s} (known keys in [{self.section}]: {known})"
            )


def _kind(value: Any) -> str:
    return type(value).__name__


def _ratio_table(r: _Reader, name: str) -> tuple[tuple[str, float], ...]:
    table = r.get(name, dict, {}, "a table of name = ratio")
    out = []
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{r.path}: {r.key(name)}.{key}: expected a number from 0 to 1, got {value!r}")
        out.append((str(key), float(value)))
    return tuple(out)


def _agent(r: _Reader) -> AgentConfig:
    return AgentConfig(
        state_dir=r.string("state_dir", AgentConfig.state_dir),
        runtime_dir=r.string("runtime_dir", AgentConfig.runtime_dir),
        log_level=r.string("log_level", "info", ("debug", "info", "warning", "error")),
        kernel_headers=r.string("kernel_headers", ""),
        console=r.string("console", "auto", ("auto", "on", "off")),
        nice=r.integer("nice", AgentConfig.nice, -20, 19),
        cpu_policy=r.string("cpu_policy", AgentConfig.cpu_policy, ("idle", "normal")),
        overload_duty=r.number("overload_duty", AgentConfig.overload_duty, 0.05, 1.0) or AgentConfig.overload_duty,
        starved_after_ms=r.integer("starved_after_ms", AgentConfig.starved_after_ms, 0, 60000),
    )


ENDPOINT_EXPECTED = 'an http:// or https:// URL or host:port, port 1-65535 (such as "http://127.0.0.1:4317")'


HEADERS_EXAMPLE = '{ "authorization" = "Basic <base64 of user:password>" }'
_CREDENTIALS = "it carries credentials"


def _authority(endpoint: str) -> tuple[int, int]:
    """Where ``[userinfo@]host[:port]`` is in ``endpoint``: (start, end)."""
    scheme_end = endpoint.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    end = len(endpoint)
    for c in "/?#":
        i = endpoint.find(c, start)
        if i != -1 and i < end:
            end = i
    return start, end


def endpoint_has_credentials(endpoint: str) -> bool:
    """``http://user:password@host``: the exporters would not send them (OTLP authenticates with
    headers), and the URL would carry a secret into logs and ``hostagentctl status``."""
    start, end = _authority(endpoint)
    return "@" in endpoint[start:end]


def endpoint_shown(endpoint: str) -> str:
    """``endpoint`` as an error message may quote it: anything before an ``@`` after the scheme
    (a user and password, whatever characters the password has) replaced by ``***``."""
    start = _authority(endpoint)[0]
    at = endpoint.rfind("@")
    return endpoint if at < start else f"{endpoint[:start]}***{endpoint[at:]}"


def endpoint_problem(endpoint: str, scheme_required: bool = False) -> str:
    """Why the exporters cannot use ``endpoint``, "" when they can: ``http(s)://host[:port][/path]``
    or ``host[:port]``, a port from 1 to 65535, no credentials. The scheme is checked on its own:
    "ftp://h" also reads as host "ftp:" followed by a path."""
    if not endpoint:
        return "it is empty"
    if any(c.isspace() for c in endpoint):
        return "it contains white space"
    scheme, sep, _ = endpoint.partition("://")
    if sep and scheme not in ("http", "https"):
        return "the scheme is not http or https"
    if not sep and scheme_required:
        return "the scheme (http:// or https://) is missing"
    if endpoint_has_credentials(endpoint):
        return _CREDENTIALS
    try:
        parts = urlsplit(endpoint if sep else f"//{endpoint}")
    except ValueError:  # an unclosed [ of an IPv6 address
        return "the host is not a valid name or address"
    try:
        port = parts.port  # ValueError when not a number from 0 to 65535
    except ValueError:
        port = 0
    if not parts.hostname:
        return "the host is missing"
    if port == 0:
        return "the port is not a number from 1 to 65535"
    return ""


def endpoint_error(where: str, expected: str, endpoint: str, headers: str,
                   scheme_required: bool = False) -> Optional[ConfigError]:  # fmt: skip
    """The error for a bad ``endpoint`` read from ``where`` (a file and key, or a variable), or
    None; ``headers`` says where credentials go instead. The endpoint is quoted without
    credentials: the message goes to logs and terminals."""
    problem = endpoint_problem(endpoint, scheme_required)
    if not problem:
        return None
    shown = endpoint_shown(endpoint)
    if problem == _CREDENTIALS:
        return ConfigError(
            f"{where}: expected a URL without user:password@ (credentials belong in {headers}), got {shown!r}"
        )
    return ConfigError(f"{where}: expected {expected}, got {shown!r}: {problem}")


def _exporter(r: _Reader) -> ExporterConfig:
    endpoint = r.string("endpoint", ExporterConfig.endpoint)
    if endpoint:
        error = endpoint_error(f"{r.path}: {r.key('endpoint')}", f'{ENDPOINT_EXPECTED} or ""', endpoint,
                               f"{r.key('headers')}, such as {HEADERS_EXAMPLE}")  # fmt: skip
        if error is not None:
            raise error
    headers = r.get("headers", dict, {}, "a table of header = value")
    for key, value in headers.items():
        if not isinstance(value, str):
            raise ConfigError(f"{r.path}: {r.key('headers')}.{key}: expected a string, got {value!r}")
    insecure = r.get("insecure", bool, None, "true or false")
    return ExporterConfig(
        endpoint=endpoint,
        protocol=r.string("protocol", "grpc", ("grpc", "http/protobuf")),
        timeout_ms=r.integer("timeout_ms", 10000, 1, 600_000),
        compression=r.string("compression", "none", ("none", "gzip")),
        headers=tuple((str(k).lower(), str(v)) for k, v in headers.items()),
        certificate=r.string("certificate", ""),
        client_certificate=r.string("client_certificate", ""),
        client_key=r.string("client_key", ""),
        insecure=insecure,
        queue_size=r.integer("queue_size", 8192, 16, 10_000_000),
        batch_size=r.integer("batch_size", 512, 1, 100_000),
        metrics=r.boolean("metrics", True),
        metrics_interval_s=r.integer("metrics_interval_s", 15, 1, 3600),
        process=r.boolean("process", False),
    )


def _admin(r: _Reader) -> AdminConfig:
    tls = None
    if "tls" in r.table:
        t = _Reader(r.path, "admin.tls", r.get("tls", dict, {}, "a table"))
        tls = AdminTlsConfig(cert=t.string("cert", ""), key=t.string("key", ""),
                             client_ca=t.string("client_ca", ""))
        t.finish()
        for name in ("cert", "key", "client_ca"):
            if not getattr(tls, name):
                raise ConfigError(f"{r.path}: admin.tls.{name}: expected a file path (mTLS needs all three)")
    listen = r.string("listen", "")
    if listen and not address_ok(listen):
        raise r.fail("listen", 'an address such as "127.0.0.1:7443" (port 1-65535)', listen)
    if listen and tls is None:
        raise ConfigError(
            f"{r.path}: admin.listen: a remote admin listener needs [admin.tls] with cert, key and client_ca "
            "(it is served only with mutual TLS); remove admin.listen or add [admin.tls]"
        )
    socket = r.string("socket", AdminConfig.socket)
    if not socket:  # "" named the working directory, "." (the admin API could not start)
        raise r.fail("socket", 'the path of the admin Unix socket (such as "/run/hostagent/admin.sock")', socket)
    return AdminConfig(socket=socket, listen=listen,
                       token=r.string("token", ""), group=r.string("group", "hostagent"), tls=tls)


def _probes(r: _Reader) -> ProbesConfig:
    enabled = r.get("enabled", list, ["http"], "a list of probe names")
    for name in enabled:
        if name not in PROBE_NAMES:
            raise ConfigError(
                f"{r.path}: probes.enabled: unknown probe {name!r} (valid: {', '.join(PROBE_NAMES)})"
            )
    return ProbesConfig(
        enabled=tuple(dict.fromkeys(enabled)),
        payload_bytes=r.integer("payload_bytes", 4096, 64, 16384),
        ring_buffer_mib=r.integer("ring_buffer_mib", 2, 1, 1024),
        data_hooks=r.string("data_hooks", "auto", DATA_HOOKS),
    )


def _protocol(where: str, value: str) -> str:
    """A protocol as spans carry it and overrides are keyed by it: a probe's name stands for its
    protocol's (postgres -> postgresql), as in hostagentctl and the admin API. An unknown name made
    an override nothing matched, silently."""
    name = protocol_name(value)
    if name not in KNOWN_PROTOCOLS:
        raise ConfigError(f"{where}: unknown protocol {value!r} (valid: {', '.join(KNOWN_PROTOCOLS)})")
    return name


def _protocol_ratios(r: _Reader) -> tuple[tuple[str, float], ...]:
    out: dict[str, float] = {}
    given: dict[str, str] = {}  # protocol -> the key that gave it
    for key, value in _ratio_table(r, "per_protocol"):
        name = _protocol(f"{r.path}: {r.key('per_protocol')}", key)
        if name in given:
            raise ConfigError(f"{r.path}: {r.key('per_protocol')}: {name} is given twice, as {given[name]!r} "
                              f"and {key!r}")  # fmt: skip
        out[name], given[name] = value, key
    return tuple(out.items())


def _sampling(r: _Reader) -> SamplingSettings:
    ratio = r.number("ratio", 1.0, 0.0, 1.0)
    return SamplingSettings(
        ratio=1.0 if ratio is None else ratio,
        keep_errors=r.boolean("keep_errors", False),
        keep_slower_than_ms=r.number("keep_slower_than_ms", None, 0.0, 86_400_000.0),
        per_service=_ratio_table(r, "per_service"),
        per_protocol=_protocol_ratios(r),
    )


def _redaction(r: _Reader) -> RedactionSettings:
    rules = []
    for i, raw in enumerate(r.get("rules", list, [], "an array of tables [[redaction.rules]]")):
        rr = _Reader(r.path, f"redaction.rules[{i}]", raw)
        name, pattern = rr.string("name", ""), rr.string("pattern", "")
        mode = rr.string("mode", "redact", ("redact", "hash"))
        rr.finish()
        if not name or not pattern:
            raise ConfigError(f"{r.path}: redaction.rules[{i}]: expected both name and pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                f"{r.path}: redaction.rules[{i}].pattern: expected a valid regular expression ({exc})"
            ) from None
        rules.append(RedactionRule(name=name, pattern=pattern, mode=mode))
    return RedactionSettings(
        pii_detection=r.boolean("pii_detection", True),
        mode=r.string("mode", "redact", ("redact", "hash")),
        rules=tuple(rules),
    )


def _capture_override(r: _Reader, i: int, raw: Any) -> CaptureOverride:
    o = _Reader(r.path, f"capture.overrides[{i}]", raw)
    limit = o.get("body_max_bytes", int, None, "an integer from 0 to 1048576")
    if limit is not None and not 0 <= limit <= 1 << 20:
        raise o.fail("body_max_bytes", "an integer from 0 to 1048576", limit)
    protocol = o.string("protocol", "*")
    override = CaptureOverride(
        service=o.string("service", "*"),
        protocol=protocol if protocol == "*" else _protocol(f"{r.path}: {o.key('protocol')}", protocol),
        headers=o.get("headers", bool, None, "true or false"),
        bodies=o.get("bodies", bool, None, "true or false"), body_max_bytes=limit,
    )
    o.finish()
    return override


def _capture(r: _Reader) -> CaptureConfig:
    overrides = r.get("overrides", list, [], "an array of tables [[capture.overrides]]")
    runtime = CaptureSettings(
        headers=r.boolean("headers", True),
        bodies=r.boolean("bodies", False),
        body_max_bytes=r.integer("body_max_bytes", 1024, 0, 1 << 20),
        raw_sql=r.boolean("raw_sql", False),
        overrides=tuple(_capture_override(r, i, raw) for i, raw in enumerate(overrides)),
    )
    return CaptureConfig(
        runtime=runtime,
        link_traces=r.boolean("link_traces", True),
        link_hold_ms=r.integer("link_hold_ms", 1500, 0, 60_000),
        telemetry_calls=r.boolean("telemetry_calls", False),
    )


def address_ok(value: str) -> bool:
    """host:port or [v6]:port (to listen on, or hostagentctl's --address), the port from 1 to 65535."""
    found = re.match(r"^(\[[0-9a-fA-F:]+\]|[^\s:\[\]]+):(\d{1,5})$", value)
    return found is not None and 1 <= int(found.group(2)) <= 65535


def _listen_address(r: _Reader, name: str) -> str:
    value = r.string(name, "")
    if value and not address_ok(value):
        raise r.fail(name, 'an address such as "127.0.0.1:14317" (port 1-65535) or "" (off)', value)
    return value


def _receiver(r: _Reader) -> ReceiverConfig:
    return ReceiverConfig(grpc=_listen_address(r, "grpc"), http=_listen_address(r, "http"),
                          hold_ms=r.integer("hold_ms", 1500, 0, 60_000),
                          sdk_wait_ms=r.integer("sdk_wait_ms", 6000, 0, 600_000),
                          max_held_spans=r.integer("max_held_spans", 20000, 0, 10_000_000),
                          max_held_bytes=r.integer("max_held_bytes", 32 << 20, 0, 1 << 34))


_SECTIONS: dict[str, Callable[[_Reader], Any]] = {
    "agent": _agent, "exporter": _exporter, "admin": _admin, "probes": _probes,
    "sampling": _sampling, "redaction": _redaction, "capture": _capture, "receiver": _receiver,
}


def parse_config(data: Mapping[str, Any], path: str) -> Config:
    unknown = sorted(set(data) - set(_SECTIONS) - {"services"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown section [{unknown[0]}] (known: {', '.join(sorted([*_SECTIONS, 'services']))})"
        )
    parts: dict[str, Any] = {}
    for name, build in _SECTIONS.items():
        reader = _Reader(path, name, data.get(name, {}))
        parts[name] = build(reader)
        reader.finish()
    services = data.get("services", [])
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        raise ConfigError(f"{path}: services: expected an array of tables [[services]]")
    return Config(path=path, services=tuple(services), **parts)


def _check_service_rules(config: Config) -> None:
    from hostagent.identity.naming import IdentityConfigError, parse_service_rules

    try:
        parse_service_rules(list(config.services), config.path)
    except IdentityConfigError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | os.PathLike[str], environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read, validate and apply the OTEL_* overrides. Raises ConfigError."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    try:
        data = tomli.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: expected UTF-8 text") from None
    except tomli.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    from hostagent.otel_env import apply_otel_env  # late: keeps this module's import light

    config = parse_config(data, str(p))
    _check_service_rules(config)
    return apply_otel_env(config, os.environ if environ is None else environ)
