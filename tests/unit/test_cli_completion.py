"""The bash completion file offers the CLI's real verbs and values (driven through bash)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .admin_harness import ROOT, shim_dir

COMPLETION = ROOT / "packaging" / "completion" / "hostagentctl.bash"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(*words: str) -> list[str]:
    script = (
        f"source {COMPLETION}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
        f"COMP_CWORD={len(words) - 1}; _hostagentctl; printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("hostagentctl", "pro"), ["probes"]),
        (
            ("hostagentctl", "--socket", "/x", "probes", "enable", ""),
            ["http", "http2", "postgres", "mysql", "redis", "dns"],
        ),
        (("hostagentctl", "sampling", ""), ["get", "set", "clear"]),
        (("hostagentctl", "sampling", "set", "--protocol", "post"), ["postgresql"]),
        (("hostagentctl", "redaction", "add", "--mode", ""), ["redact", "hash"]),
        (("hostagentctl", "tail", "--status", ""), ["ok", "error"]),
        (("hostagentctl", "status", "-o", ""), ["table", "json"]),
        (("hostagentctl", "cap"), ["capture"]),
        (("hostagentctl", "capture", ""), ["get", "set", "clear"]),
        (("hostagentctl", "capture", "set", "--b"), ["--bodies", "--body-max"]),
        (("hostagentctl", "capture", "set", "--headers", ""), ["on", "off"]),
        (("hostagentctl", "capture", "set", "--headers", "on", "--raw-sql", ""), ["on", "off"]),
        (("hostagentctl", "capture", "set", "--bodies", "on", "--protocol", "gr"), ["grpc"]),
        (("hostagentctl", "capture", "set", "--body-max", ""), []),
        (("hostagentctl", "capture", "clear", "--"), ["--service", "--protocol"]),
    ],
)
def test_completion(words: tuple[str, ...], expected: list[str]) -> None:
    assert complete(*words) == expected


def test_every_verb_is_offered() -> None:
    import sys

    sys.path.insert(0, str(shim_dir()))  # hostagentctl from the checkout, installed or not
    from hostagentctl.__main__ import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    assert sorted(complete("hostagentctl", "")[-len(verbs) :]) == sorted(verbs)
