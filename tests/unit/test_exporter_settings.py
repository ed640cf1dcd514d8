"""[exporter] settings reach the OTLP exporters as the OTLP specification says."""

from __future__ import annotations

from pathlib import Path

from hostagent.assembly import exporter_kwargs, make_exporters
from hostagent.config import load_config


def test_signal_specific_http_endpoint_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[exporter]\nprotocol = "http/protobuf"\n')
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9999/custom"}
    otlp, console, _ = make_exporters(load_config(path, environ=env), console=False)
    assert console is None
    assert otlp[0]._endpoint == "http://127.0.0.1:9999/custom"  # type: ignore[attr-defined]


def test_generic_http_endpoint_gets_the_signal_path(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[exporter]\nprotocol = "http/protobuf"\nendpoint = "http://127.0.0.1:4318"\n')
    otlp, _, description = make_exporters(load_config(path, environ={}), console=True)
    assert otlp[0]._endpoint == "http://127.0.0.1:4318/v1/traces"  # type: ignore[attr-defined]
    assert description == "http://127.0.0.1:4318 (http/protobuf) + console"


def test_scheme_less_grpc_endpoint_and_headers(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('[exporter]\nendpoint = "127.0.0.1:4317"\nheaders = { "X-Tenant" = "a" }\ntimeout_ms = 2500\n')
    kwargs = exporter_kwargs(load_config(path, environ={}))
    assert kwargs["endpoint"] == "http://127.0.0.1:4317"
    assert kwargs["headers"] == {"x-tenant": "a"}
    assert kwargs["timeout_s"] == 2.5
