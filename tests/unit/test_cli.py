"""hostagentctl as a user runs it: a subprocess against a real admin server, one per verb."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostagent.admin.tap import SpanSummary

from .admin_harness import ROOT, cli, running, shim_dir, world_dir


@pytest.fixture(scope="module")
def h():
    with world_dir() as d, running(d) as harness:
        yield harness


def run(h, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("--socket", str(h.socket), *args)


def js(h, *args: str):
    out = run(h, *args, "-o", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_status_json_is_complete_and_stable(h) -> None:
    doc = js(h, "status")
    assert doc["version"] == "9.9.9-test" and doc["spans_exported"] == "42"  # uint64 -> string in proto JSON
    assert doc["drops"] == {"export_queue": "0", "ring_buffer": "3"}
    assert doc["probes"][5] == {
        "name": "dns",
        "enabled": True,
        "state": "failed",
        "reason": "no tracepoint sys_enter_sendmmsg",
    }
    assert set(doc) == {
        "version",
        "uptime_seconds",
        "kernel_release",
        "kernel_headers",
        "probes",
        "events_per_second",
        "spans_exported",
        "drops",
        "exporter_endpoint",
        "exporter_last_error",
        "sampling",
        "redaction",
        "redacted",
        "settings_generation",
        "healthy",
        "runtime_overrides",
        "capture",
        "layering",
        "cpu_effort",
        "connections",
    }
    assert doc["connections"] == {"detected_http": "5", "detected_redis": "2", "rejected_redis": "1", "unknown": "3"}
    assert doc["cpu_effort"] == "backed off: overloaded, working 20% of the time (for 42 s in all)"
    table = run(h, "status")
    assert table.returncode == 0
    assert "hostagent 9.9.9-test  up 1h02m03s  healthy: yes" in table.stdout
    assert "\nconnections:    detected_http=5, detected_redis=2, rejected_redis=1, unknown=3\n" in table.stdout
    assert "\ncpu effort:     backed off: overloaded, working 20% of the time (for 42 s in all)\n" in table.stdout
    assert "\ndns       yes      failed    no tracepoint sys_enter_sendmmsg\n" in table.stdout


def test_probes_verbs(h) -> None:
    assert [p["name"] for p in js(h, "probes", "enable", "mysql")["probes"] if p["enabled"]] == ["http", "mysql", "dns"]
    assert [p["name"] for p in js(h, "probes", "disable", "mysql")["probes"] if p["enabled"]] == ["http", "dns"]
    assert len(js(h, "probes", "list")["probes"]) == 6
    out = run(h, "probes", "enable", "kafka")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "hostagentctl: invalid argument: unknown probe 'kafka'; valid probes: http, http2, postgres, mysql, redis, dns"
    )


def test_sampling_verbs(h) -> None:
    assert js(h, "sampling", "set", "0.3")["ratio"] == 0.3
    doc = js(h, "sampling", "set", "1", "--service", "checkout", "--keep-errors", "--keep-slower-than", "1.5s")
    assert doc["per_service"] == [{"name": "checkout", "ratio": 1.0}]
    assert doc["keep_errors"] is True and doc["keep_slower_than_ms"] == 1500.0
    assert js(h, "sampling", "clear", "--service", "checkout")["per_service"] == []
    doc = js(h, "sampling", "set", "--no-keep-errors", "--keep-slower-than", "0")
    assert doc["keep_errors"] is False and "keep_slower_than_ms" not in doc
    assert js(h, "sampling", "get")["ratio"] == 0.3
    out = run(h, "sampling", "set", "1.5")
    assert (out.returncode, out.stderr.strip()) == (
        1,
        "hostagentctl: invalid argument: ratio must be between 0 and 1, got 1.5",
    )
    assert h.holder.current.sampling.ratio == 0.3
    js(h, "sampling", "set", "1")


def test_redaction_verbs(h) -> None:
    doc = js(h, "redaction", "add", "--name", "order", "--pattern", r"ord-\d{6}", "--mode", "hash")
    assert doc["rules"] == [{"name": "order", "pattern": r"ord-\d{6}", "mode": "hash"}]
    assert js(h, "redaction", "list")["rules"][0]["name"] == "order"
    tested = js(h, "redaction", "test", "ord-123456 to bob@example.com")
    assert tested["found"] == {"email": "1", "order": "1"}
    assert tested["text"].endswith(" to [REDACTED:email]") and tested["text"].startswith("[HASHED:order:")
    plain = run(h, "redaction", "test", "password=hunter2")
    assert plain.stdout == "password=[REDACTED:secret_param]\n"
    assert js(h, "redaction", "pii", "off")["pii_detection"] is False
    assert js(h, "redaction", "pii", "on", "--mode", "redact")["pii_detection"] is True
    assert js(h, "redaction", "remove", "order")["rules"] == []
    out = run(h, "redaction", "add", "--name", "bad", "--pattern", "(a+)+")
    assert out.returncode == 1 and "nested unbounded quantifiers" in out.stderr


def test_reload_reset_version(h) -> None:
    assert js(h, "reload") == {"ok": True, "error": "", "settings_generation": str(h.holder.current.generation)}
    h.reload_result = (False, "bad config")
    out = run(h, "reload")
    assert (out.returncode, out.stdout.strip()) == (1, "reload failed, running config kept: bad config")
    h.reload_result = (True, "")
    js(h, "probes", "enable", "redis")
    assert js(h, "reset")["reset"] == ["probes", "sampling", "redaction"]
    assert h.holder.current.probes == {"http", "dns"}
    assert js(h, "version") == {"agent": "9.9.9-test", "agent_error": "", "client": "0.1.0"}


def test_tail_json_lines_with_filters(h) -> None:
    env = {"PYTHONPATH": f"{shim_dir()}:{ROOT}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hostagentctl",
            "--socket",
            str(h.socket),
            "tail",
            "--status",
            "error",
            "--min-duration",
            "100ms",
            "--count",
            "2",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.time() + 20
        while h.tap.subscribers == 0 and time.time() < deadline:
            time.sleep(0.02)
        assert h.tap.subscribers == 1
        for n, (status, ms) in enumerate([("ok", 500), ("error", 50), ("error", 120), ("error", 300)]):
            h.tap.publish(
                SpanSummary(
                    f"{n:032x}",
                    f"{n:016x}",
                    "GET /x",
                    "web",
                    "http",
                    "server",
                    1_700_000_000_000_000_000,
                    ms,
                    status,
                    "500",
                )
            )
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [(x["span_id"], x["duration_ms"]) for x in lines] == [(f"{2:016x}", 120.0), (f"{3:016x}", 300.0)]


def test_tail_refuses_an_unknown_protocol(h) -> None:
    """A filter nothing can match used to print nothing, forever."""
    out = cli("--socket", str(h.socket), "tail", "--protocol", "nosuch", timeout=10)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines()[-1] == (
        "hostagentctl tail: error: argument --protocol: invalid choice: 'nosuch' "
        "(choose from 'http', 'http2', 'grpc', 'postgresql', 'mysql', 'redis', 'dns')"
    )


@pytest.mark.parametrize(
    "verb, actions",
    [
        ("probes", [
            ("list", "each probe: enabled, attached, and why not"),
            ("enable", "turn a probe on (attaches its programs)"),
            ("disable", "turn a probe off (its spans stop, its programs detach)"),
        ]),
        ("redaction", [
            ("list", "the rules and the PII detection in force"),
            ("add", "add a rule: what a pattern matches is hidden in every span"),
            ("remove", "remove a rule by its name"),
            ("test", "show what the agent would hide in TEXT"),
            ("pii", "turn the built-in PII detectors on or off"),
        ]),
        ("sampling", [
            ("get", "the sampling in force"),
            ("set", "set the global ratio or an override"),
            ("clear", "remove a per-service or per-protocol override"),
        ]),
        ("capture", [
            ("get", "the capture settings in force"),
            ("set", "change the base values, or with --service/--protocol the override for them"),
            ("clear", "remove the override for a service and/or protocol"),
        ]),
    ],
)  # fmt: skip
def test_help_lists_every_action(verb: str, actions: list[tuple[str, str]]) -> None:
    out = cli(verb, "--help", env={"COLUMNS": "200"})  # one line per action
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    start = lines.index("  ACTION") + 1
    listed = [line.split(None, 1) for line in lines[start : start + len(actions)]]
    assert [(x[0], x[1].strip()) for x in listed] == actions, out.stdout


def test_redaction_remove_takes_the_name_as_add_gives_it(h) -> None:
    js(h, "redaction", "add", "--name", "ticket", "--pattern", r"TCK-\d+")
    assert [r["name"] for r in js(h, "redaction", "list")["rules"]] == ["ticket"]
    assert js(h, "redaction", "remove", "--name", "ticket")["rules"] == []
    js(h, "redaction", "add", "--name", "ticket", "--pattern", r"TCK-\d+")
    assert js(h, "redaction", "remove", "ticket")["rules"] == []
    for args in (["redaction", "remove"], ["redaction", "remove", "a", "--name", "b"]):
        out = run(h, *args)
        assert (out.returncode, out.stderr.splitlines()[-1]) == (
            2, "hostagentctl redaction remove: error: give the rule's name once, as NAME or --name NAME",
        ), args  # fmt: skip


def test_usage_errors_exit_2(h) -> None:
    for args in (
        ["bogus"],
        ["probes"],
        ["sampling", "set", "abc"],
        ["tail", "--min-duration", "soon"],
        ["status", "-o", "yaml"],
        ["sampling", "set"],
    ):
        out = run(h, *args)
        assert out.returncode == 2, (args, out.stderr)
        assert "usage: hostagentctl" in out.stderr


TIMEOUT = "hostagentctl: error: argument --timeout: invalid timeout {!r}: use seconds above 0, e.g. 5 or 0.5"
COUNT = ("hostagentctl tail: error: argument --count: invalid count {!r}: use a whole number from 1 (without "
         "--count, tail runs until Ctrl-C)")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "usage", "error"),
    [
        # 0, negative, nan, inf: "the agent did not answer in time (try --timeout)", whatever it did
        *((["--timeout", t, "status"], "hostagentctl [-h]", TIMEOUT.format(t)) for t in ("0", "-1", "nan", "inf")),
        # a negative count was never reached: tail ran until Ctrl-C
        *((["tail", "--count", c], "hostagentctl tail [-h]", COUNT.format(c)) for c in ("-1", "0", "two")),
        # left-over arguments and checks made after parsing: the command's usage and name, not
        # hostagentctl's (which does not show the command's arguments)
        (["probes", "enable", "http", "extra"], "hostagentctl probes enable [-h]",
         "hostagentctl probes enable: error: unrecognized arguments: extra"),
        (["status", "--socket", "/run/x.sock"], "hostagentctl status [-h]",
         "hostagentctl status: error: unrecognized arguments: --socket /run/x.sock (--socket is a connection "
         "option: it goes before the verb, as in hostagentctl --socket ... status)"),
        (["probes", "list", "--timeout=9"], "hostagentctl probes list [-h]",
         "hostagentctl probes list: error: unrecognized arguments: --timeout=9 (--timeout is a connection "
         "option: it goes before the verb, as in hostagentctl --timeout ... probes list)"),
        (["sampling", "set"], "hostagentctl sampling set [-h]",
         "hostagentctl sampling set: error: give RATIO, --keep-errors/--no-keep-errors or --keep-slower-than"),
        (["capture", "set"], "hostagentctl capture set [-h]",
         "hostagentctl capture set: error: give --headers, --bodies, --body-max or --raw-sql"),
        (["capture", "clear"], "hostagentctl capture clear [-h]",
         "hostagentctl capture clear: error: give --service and/or --protocol"),
    ],
)  # fmt: skip
def test_usage_error_names_the_command_and_shows_its_usage(h, args: list[str], usage: str, error: str) -> None:
    out = cli("--socket", str(h.socket), *args, timeout=10)
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    assert out.stderr.startswith(f"usage: {usage}"), out.stderr
    assert out.stderr.splitlines()[-1] == error


def test_connection_options_that_cannot_work_say_so(tmp_path: Path) -> None:
    """gRPC dialled 127.0.0.1:99999 as port 34463, and took any file as a certificate (logging its
    own errors, then "Connection refused"); a socket path that is a file or directory said
    "nobody answered"."""
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    text = tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    cases = [
        (["--address", "127.0.0.1:99999", "--cacert", str(pem)],
         "hostagentctl: --address '127.0.0.1:99999': expected HOST:PORT, the port from 1 to 65535 "
         "(such as agent.example.com:7443)"),
        (["--address", "agent.example.com", "--cacert", str(pem)],
         "hostagentctl: --address 'agent.example.com': expected HOST:PORT, the port from 1 to 65535 "
         "(such as agent.example.com:7443)"),
        (["--address", "127.0.0.1:18799", "--cacert", str(text)],
         f"hostagentctl: --cacert {str(text)!r} is not a PEM file (no -----BEGIN line)"),
        (["--address", "127.0.0.1:18799", "--cacert", str(pem), "--cert", str(text), "--key", str(pem)],
         f"hostagentctl: --cert {str(text)!r} is not a PEM file (no -----BEGIN line)"),
        *((["--socket", str(path)],
           f"hostagentctl: cannot reach the hostagent admin API at unix:{path} ({path} is not a Unix socket). "
           "Is the agent running? Check with `systemctl status hostagent`, or pass --socket PATH / set "
           "HOSTAGENT_SOCKET.") for path in (text, tmp_path)),
    ]  # fmt: skip
    for args, error in cases:
        out = cli(*args, "status", timeout=10)
        assert (out.returncode, out.stdout, out.stderr) == (1, "", error + "\n"), args


def test_unreachable_daemon_says_where_and_what_to_do(tmp_path: Path) -> None:
    sock = tmp_path / "nothing.sock"
    out = cli("--socket", str(sock), "status")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"hostagentctl: cannot reach the hostagent admin API at unix:{sock} ({sock} does not exist). "
        "Is the agent running? Check with `systemctl status hostagent`, or pass --socket PATH / set "
        "HOSTAGENT_SOCKET."
    )
    out = cli("status", env={"HOSTAGENT_SOCKET": str(sock)})
    assert f"unix:{sock}" in out.stderr
    out = cli("status", env={"HOSTAGENT_ADDRESS": "127.0.0.1:18799"})
    assert out.returncode == 1 and "--address needs --cacert" in out.stderr


def test_socket_without_agent_says_nobody_answered(tmp_path: Path) -> None:
    import socket

    sock = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the file stays, nobody listens: what a crashed agent leaves behind
    out = cli("--socket", str(sock), "probes", "list")
    assert out.returncode == 1
    assert f"at unix:{sock} (nobody answered). Is the agent running?" in out.stderr


def _parsers(parser: argparse.ArgumentParser, path: str = "hostagentctl") -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, by its command line."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_option_and_argument_says_what_it_does() -> None:
    """--help of each command: an option shown with no text (tail --service, --status and
    --min-duration, sampling clear, redaction add --mode... found by an acceptance run) leaves
    the user guessing what it filters or what its values do."""
    sys.path.insert(0, str(shim_dir()))  # hostagentctl from the checkout, installed or not
    from hostagentctl.__main__ import build_parser

    silent = [f"{path} {'/'.join(a.option_strings) or a.dest}"
              for path, parser in _parsers(build_parser()) for a in parser._actions
              if not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert silent == []


@pytest.mark.parametrize(
    "argv",
    [
        ["tail", "--protocol", "postgres"],
        ["sampling", "set", "0.5", "--protocol", "postgres"],
        ["sampling", "clear", "--protocol", "postgres"],
        ["capture", "set", "--bodies", "on", "--protocol", "postgres"],
        ["capture", "clear", "--protocol", "postgres"],
    ],
)
def test_a_probes_name_stands_for_its_protocol(argv: list[str]) -> None:
    """`probes enable postgres`, then `tail --protocol postgres`: the probe's name was refused (tail) or
    set an override nothing matched (sampling, capture); spans carry the protocol's, postgresql."""
    from control.__main__ import build_parser

    assert build_parser().parse_args(argv).protocol == "postgresql"
    assert build_parser().parse_args([*argv[:-1], "mysql"]).protocol == "mysql"
