"""OTEL_EXPORTER_OTLP_* environment variables, as the OpenTelemetry specification defines them.

They override the [exporter] section. Signal-specific variables (``..._TRACES_...``) win over the
generic ones. A bad value is a ConfigError naming the variable, like a bad key in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import unquote

from hostagent.config import Config, ConfigError, endpoint_error

_PREFIX = "OTEL_EXPORTER_OTLP_"


def _pick(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The traces-specific variable if set, else the generic one: (variable, value)."""
    for var in (f"{_PREFIX}TRACES_{name}", f"{_PREFIX}{name}"):
        value = env.get(var)
        if value is not None and value.strip() != "":
            return var, value.strip()
    return None


def parse_headers(var: str, value: str) -> tuple[tuple[str, str], ...]:
    """W3C-baggage-like "k1=v1,k2=v2" with percent-encoded values."""
    out = []
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{var}: expected comma-separated key=value pairs, got {item.strip()!r}")
        out.append((unquote(key.strip()).lower(), unquote(val.strip())))
    return tuple(out)


def apply_otel_env(config: Config, env: Mapping[str, str]) -> Config:
    exp = config.exporter
    changes: dict[str, object] = {}
    if found := _pick(env, "ENDPOINT"):
        var, value = found
        error = endpoint_error(var, "a URL starting with http:// or https://, port 1-65535", value,
                               f"{_PREFIX}HEADERS, such as authorization=Basic%20<base64 of user:password>",
                               scheme_required=True)  # fmt: skip
        if error is not None:
            raise error
        changes["endpoint"] = value
        changes["endpoint_is_signal_specific"] = var.startswith(f"{_PREFIX}TRACES_")
    if found := _pick(env, "PROTOCOL"):
        var, value = found
        if value not in ("grpc", "http/protobuf"):
            raise ConfigError(f'{var}: expected "grpc" or "http/protobuf", got {value!r}')
        changes["protocol"] = value
    if found := _pick(env, "TIMEOUT"):
        var, value = found
        if not value.isdigit() or int(value) <= 0:
            raise ConfigError(f"{var}: expected a positive integer of milliseconds, got {value!r}")
        changes["timeout_ms"] = int(value)
    if found := _pick(env, "COMPRESSION"):
        var, value = found
        if value not in ("gzip", "none"):
            raise ConfigError(f'{var}: expected "gzip" or "none", got {value!r}')
        changes["compression"] = value
    if found := _pick(env, "HEADERS"):
        headers = dict(exp.headers)
        headers.update(parse_headers(*found))
        changes["headers"] = tuple(headers.items())
    for name, attr in (("CERTIFICATE", "certificate"), ("CLIENT_CERTIFICATE", "client_certificate"),
                       ("CLIENT_KEY", "client_key")):
        if found := _pick(env, name):
            changes[attr] = found[1]
    if found := _pick(env, "INSECURE"):
        var, value = found
        if value.lower() not in ("true", "false"):
            raise ConfigError(f'{var}: expected "true" or "false", got {value!r}')
        changes["insecure"] = value.lower() == "true"
    if not changes:
        return config
    return replace(config, exporter=replace(exp, **changes))  # type: ignore[arg-type]
