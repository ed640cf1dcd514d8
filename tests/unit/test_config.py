"""Config file validation and the OTEL_EXPORTER_OTLP_* overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostagent import settings as rt
from hostagent.config import ConfigError, load_config
from hostagent.daemon import settings_from_config
from hostagent.settings import CaptureOverride

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = 'an http:// or https:// URL or host:port, port 1-65535 (such as "http://127.0.0.1:4317")'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hostagent.toml"
    path.write_text(text)
    return path


def test_packaged_default_config_is_valid_and_matches_defaults() -> None:
    config = load_config(REPO / "packaging" / "hostagent.toml", environ={})
    assert config.exporter.endpoint == "http://127.0.0.1:4317"
    assert config.exporter.protocol == "grpc"
    assert config.admin.socket == "/run/hostagent/admin.sock"
    assert config.probes.enabled == ("http",)
    assert config.probes.payload_bytes == 4096
    assert config.agent.nice == 10
    assert config.agent.cpu_policy == "idle"
    assert config.agent.overload_duty == 0.2
    assert config.agent.starved_after_ms == 1000
    assert config.probes.data_hooks == "auto"
    assert config.probes.ring_buffer_mib == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[probes]\nenabled = ["htp"]\n', "probes.enabled: unknown probe 'htp' (valid: http, http2"),
        ('[exporter]\ntimeout_ms = "x"\n', "exporter.timeout_ms: expected an integer from 1 to 600000"),
        ("[exporter]\ntimeot_ms = 1\n", "unknown key exporter.timeot_ms"),
        ('[exporter]\nprotocol = "http"\n', 'exporter.protocol: expected one of "grpc", "http/protobuf"'),
        ("[sampling]\nratio = 1.5\n", "sampling.ratio: expected a number from 0 to 1, got 1.5"),
        ("[sampling]\nratio = true\n", "sampling.ratio: expected a number from 0 to 1, got True"),
        ("[probes]\npayload_bytes = 10\n", "probes.payload_bytes: expected an integer from 64 to 16384"),
        ("[nope]\n", "unknown section [nope]"),
        ("[exporter\n", "not valid TOML"),
        ('[[redaction.rules]]\nname = "x"\npattern = "("\n', "rules[0].pattern: expected a valid"),
        ('[admin]\nlisten = "0.0.0.0"\n', "admin.listen: expected an address"),
        ('[admin]\nsocket = ""\n',
         'admin.socket: expected the path of the admin Unix socket (such as "/run/hostagent/admin.sock"), got \'\''),
        ('[admin.tls]\ncert = "a"\n', "admin.tls.key: expected a file path"),
        ("agent = 3\n", "[agent] must be a table"),
        ("[agent]\nnice = 20\n", "agent.nice: expected an integer from -20 to 19, got 20"),
        ('[agent]\nnice = "low"\n', "agent.nice: expected an integer from -20 to 19"),
        ('[agent]\ncpu_policy = "batch"\n', 'agent.cpu_policy: expected one of "idle", "normal", got \'batch\''),
        ("[agent]\noverload_duty = 0\n", "agent.overload_duty: expected a number from 0.05 to 1, got 0"),
        ('[agent]\noverload_duty = "half"\n', "agent.overload_duty: expected a number from 0.05 to 1"),
        ("[agent]\nstarved_after_ms = -1\n", "agent.starved_after_ms: expected an integer from 0 to 60000, got -1"),
        ("[agent]\nstarved_after_ms = 1.5\n", "agent.starved_after_ms: expected an integer from 0 to 60000"),
        ('[probes]\ndata_hooks = "kprobes"\n',
         'probes.data_hooks: expected one of "auto", "socket", "syscalls", got \'kprobes\''),
        *((f'[exporter]\nendpoint = "{bad}"\n', f"exporter.endpoint: expected {ENDPOINT} or \"\", got {bad!r}")
          for bad in ("ftp://127.0.0.1:21", "http://127.0.0.1:99999", "127.0.0.1:99999", "https://127.0.0.1:0",
                      "http://:4317", "http://127.0.0.1:43x7", "grpc://127.0.0.1:4317", "127.0.0.1 :4317")),
        ('[admin]\nlisten = "127.0.0.1:99999"\n',
         "admin.listen: expected an address such as \"127.0.0.1:7443\" (port 1-65535), got '127.0.0.1:99999'"),
        ('[receiver]\ngrpc = "127.0.0.1:0"\n',
         "receiver.grpc: expected an address such as \"127.0.0.1:14317\" (port 1-65535) or \"\" (off), got "
         "'127.0.0.1:0'"),
    ],
)
def test_bad_config_names_file_key_and_expectation(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


CREDENTIALS = ('exporter.endpoint: expected a URL without user:password@ (credentials belong in exporter.headers, '
               'such as { "authorization" = "Basic <base64 of user:password>" }), got ')


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        # OTLP authenticates with headers: a URL's user and password would not be sent, and the
        # URL would carry the secret into logs; the message never quotes them
        ("http://user:hunter2@127.0.0.1:4317", CREDENTIALS + "'http://***@127.0.0.1:4317'"),
        ("https://user:hunter2@otel.example.com/v1/traces", CREDENTIALS + "'https://***@otel.example.com/v1/traces'"),
        ("http://hunter2@127.0.0.1:4317", CREDENTIALS + "'http://***@127.0.0.1:4317'"),
        ("https://:hunter2@127.0.0.1", CREDENTIALS + "'https://***@127.0.0.1'"),
        ("user:hunter2@127.0.0.1:4317", CREDENTIALS + "'***@127.0.0.1:4317'"),
        ("http://user:hunter2@[::1]:4317", CREDENTIALS + "'http://***@[::1]:4317'"),
        # the reason follows what was expected
        ("http://:4317", f"expected {ENDPOINT} or \"\", got 'http://:4317': the host is missing"),
        ("https://", f"expected {ENDPOINT} or \"\", got 'https://': the host is missing"),
        (":4317", f"expected {ENDPOINT} or \"\", got ':4317': the host is missing"),
        ("http://127.0.0.1:0", "got 'http://127.0.0.1:0': the port is not a number from 1 to 65535"),
        ("http://127.0.0.1:43x7", "got 'http://127.0.0.1:43x7': the port is not a number from 1 to 65535"),
        ("http://[::1:4317", "got 'http://[::1:4317': the host is not a valid name or address"),
        ("grpc://127.0.0.1:4317", "got 'grpc://127.0.0.1:4317': the scheme is not http or https"),
        ("127.0.0.1 :4317", "got '127.0.0.1 :4317': it contains white space"),
        # a '/' in the password ends the URL's authority: a bad port, and still not quoted
        ("http://user:hunt/er2@127.0.0.1:4317",
         "got 'http://***@127.0.0.1:4317': the port is not a number from 1 to 65535"),
        ("ftp://user:hunter2@127.0.0.1", "got 'ftp://***@127.0.0.1': the scheme is not http or https"),
    ],
)
def test_bad_endpoint_says_why_and_never_quotes_credentials(tmp_path: Path, endpoint: str, message: str) -> None:
    path = write(tmp_path, f'[exporter]\nendpoint = "{endpoint}"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value).startswith(f"{path}: exporter.endpoint: expected ")
    assert str(err.value).endswith(message)
    assert "hunter2" not in str(err.value) and "hunt" not in str(err.value)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:hunter2@127.0.0.1:4318",
         "OTEL_EXPORTER_OTLP_ENDPOINT: expected a URL without user:password@ (credentials belong in "
         "OTEL_EXPORTER_OTLP_HEADERS, such as authorization=Basic%20<base64 of user:password>), got "
         "'http://***@127.0.0.1:4318'"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://:4318/v1/traces",
         "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: expected a URL starting with http:// or https://, port 1-65535, got "
         "'http://:4318/v1/traces': the host is missing"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317",
         "OTEL_EXPORTER_OTLP_ENDPOINT: expected a URL starting with http:// or https://, port 1-65535, got "
         "'127.0.0.1:4317': the scheme (http:// or https://) is missing"),
    ],
)  # fmt: skip
def test_bad_endpoint_variable_says_why_and_never_quotes_credentials(tmp_path: Path, var: str, value: str,
                                                                      message: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, ""), environ={var: value})
    assert str(err.value) == message


VALID_PROTOCOLS = "(valid: http, http2, grpc, postgresql, mysql, redis, dns)"


@pytest.mark.parametrize(
    ("text", "per_protocol", "overrides"),
    [
        # a probe's name stands for its protocol's, as in hostagentctl and the admin API: spans
        # carry postgresql, so an override keyed "postgres" matched nothing
        ("[sampling]\nper_protocol = { postgres = 0.1, dns = 0.5 }\n", (("postgresql", 0.1), ("dns", 0.5)), ()),
        ('[[capture.overrides]]\nprotocol = "postgres"\nbodies = true\n', (),
         (CaptureOverride(protocol="postgresql", bodies=True),)),
        ('[[capture.overrides]]\nservice = "shop"\nheaders = false\n', (),
         (CaptureOverride(service="shop", headers=False),)),  # no protocol: any
    ],
)  # fmt: skip
def test_protocols_in_overrides_are_the_ones_spans_carry(tmp_path: Path, text: str, per_protocol: object,
                                                         overrides: object) -> None:  # fmt: skip
    config = load_config(write(tmp_path, text), environ={})
    assert (config.sampling.per_protocol, config.capture.runtime.overrides) == (per_protocol, overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sampling]\nper_protocol = { htp = 0.1 }\n",
         f"sampling.per_protocol: unknown protocol 'htp' {VALID_PROTOCOLS}"),
        ("[sampling]\nper_protocol = { postgres = 0.1, postgresql = 0.2 }\n",
         "sampling.per_protocol: postgresql is given twice, as 'postgres' and 'postgresql'"),
        ('[[capture.overrides]]\nprotocol = "kafka"\nbodies = true\n',
         f"capture.overrides[0].protocol: unknown protocol 'kafka' {VALID_PROTOCOLS}"),
    ],
)  # fmt: skip
def test_an_override_for_no_protocol_is_refused(tmp_path: Path, text: str, message: str) -> None:
    """check-config said OK, and the override matched nothing, silently."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:4317", "https://otel.example.com/v1/traces", "http://[::1]:4318", "127.0.0.1:4317",
     "collector", "http://127.0.0.1:65535", "https://127.0.0.1:1", ""],
)  # fmt: skip
def test_good_endpoints_are_accepted(tmp_path: Path, endpoint: str) -> None:
    config = load_config(write(tmp_path, f'[exporter]\nendpoint = "{endpoint}"\n'), environ={})
    assert config.exporter.endpoint == endpoint


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_otel_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[exporter]\nendpoint = "http://127.0.0.1:1"\nheaders = { "x-a" = "file" }\n')
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-a=env,api-key=s%20ecret",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
    }
    exp = load_config(path, environ=env).exporter
    assert exp.endpoint == "http://127.0.0.1:4318"
    assert exp.endpoint_is_signal_specific is False
    assert exp.protocol == "http/protobuf"
    assert dict(exp.headers) == {"x-a": "env", "api-key": "s ecret"}
    assert exp.timeout_ms == 2500
    assert exp.compression == "gzip"
    assert exp.certificate == "/etc/ca.pem"


def test_traces_specific_variables_win(tmp_path: Path) -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9999/custom",
    }
    exp = load_config(write(tmp_path, ""), environ=env).exporter
    assert exp.endpoint == "http://127.0.0.1:9999/custom"
    assert exp.endpoint_is_signal_specific is True


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "OTEL_EXPORTER_OTLP_TIMEOUT: expected a positive integer"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", 'OTEL_EXPORTER_OTLP_PROTOCOL: expected "grpc"'),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317", "OTEL_EXPORTER_OTLP_ENDPOINT: expected a URL"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:99999",
         "OTEL_EXPORTER_OTLP_ENDPOINT: expected a URL starting with http:// or https://, port 1-65535, got "
         "'http://127.0.0.1:99999'"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://127.0.0.1:21/v1/traces",
         "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: expected a URL starting with http"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "OTEL_EXPORTER_OTLP_HEADERS: expected comma-separated"),
    ],
)
def test_bad_otel_variables_are_named(tmp_path: Path, var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, ""), environ={var: value})


RUNTIME_TOML = """\
[probes]
enabled = ["http", "redis"]

[sampling]
ratio = 0.25
keep_errors = true
keep_slower_than_ms = 250.0
per_service = { checkout = 1.0 }
per_protocol = { redis = 0.0 }

[redaction]
pii_detection = false
mode = "hash"

[[redaction.rules]]
name = "ticket"
pattern = "TK-[0-9]+"
mode = "redact"

[capture]
headers = false
bodies = true
body_max_bytes = 64
raw_sql = true
link_hold_ms = 900

[[capture.overrides]]
service = "shop"
bodies = false
"""


def test_the_files_runtime_sections_are_the_starting_runtime_settings(tmp_path: Path) -> None:
    """[sampling], [redaction] and [capture]'s runtime keys are read into the types the admin API
    changes, and reach the agent's settings whole: no second set of fields to copy across."""
    config = load_config(write(tmp_path, RUNTIME_TOML), environ={})
    settings = settings_from_config(config)
    assert settings == rt.RuntimeSettings(
        probes=frozenset({"http", "redis"}),
        sampling=rt.SamplingSettings(ratio=0.25, per_service=(("checkout", 1.0),), per_protocol=(("redis", 0.0),),
                                     keep_errors=True, keep_slower_than_ms=250.0),
        redaction=rt.RedactionSettings(pii_detection=False, mode="hash",
                                       rules=(rt.RedactionRule("ticket", "TK-[0-9]+", "redact"),)),
        capture=rt.CaptureSettings(headers=False, bodies=True, body_max_bytes=64, raw_sql=True,
                                   overrides=(rt.CaptureOverride(service="shop", bodies=False),)),
    )  # fmt: skip
    assert settings.sampling is config.sampling and settings.redaction is config.redaction
    assert settings.capture is config.capture.runtime
    assert (config.capture.link_traces, config.capture.link_hold_ms) == (True, 900)  # not runtime: kept apart


def test_the_ring_is_2_mib_unless_configured(tmp_path: Path) -> None:
    """2 MiB, not 8: a ring that stays warm in the L2 costs the traced processes ~50-135 ns less
    per request (bench/README "ring size"), and still holds ~100 ms of records at the 20k level
    (1 MiB saved ~40 ns more but held half as long)."""
    from hostagent.probes.loader import BpfCapture

    assert load_config(write(tmp_path, "[probes]\n"), environ={}).probes.ring_buffer_mib == 2
    assert load_config(write(tmp_path, "[probes]\nring_buffer_mib = 8\n"), environ={}).probes.ring_buffer_mib == 8
    assert BpfCapture(on_event=lambda _: None).ring_bytes == 2 << 20
