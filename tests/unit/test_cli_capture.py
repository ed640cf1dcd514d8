"""hostagentctl capture get|set|clear and the status sections added with it (capture, capture
losses, layering): the real CLI as a subprocess against a real admin server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hostagent.admin.v1 import admin_pb2 as pb
from hostagent.settings import CaptureOverride, CaptureSettings

from .admin_harness import cli, running, shim_dir, world_dir

APP = "tests.support.http_app"


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


def test_capture_verbs_change_exactly_what_they_say(h) -> None:
    assert js(h, "capture", "get") == {
        "headers": True, "bodies": False, "body_max_bytes": 1024, "raw_sql": False, "overrides": []}
    doc = js(h, "capture", "set", "--bodies", "on", "--service", APP)
    assert doc["overrides"] == [{"service": APP, "protocol": "*", "bodies": True}]  # unset fields absent
    doc = js(h, "capture", "set", "--headers", "off", "--body-max", "4k", "--raw-sql", "on")
    assert (doc["headers"], doc["body_max_bytes"], doc["raw_sql"]) == (False, 4096, True)
    doc = js(h, "capture", "set", "--body-max", "64", "--service", APP, "--protocol", "http")
    assert doc["overrides"][-1] == {"service": APP, "protocol": "http", "body_max_bytes": 64}
    assert h.holder.current.capture == CaptureSettings(
        headers=False, bodies=False, body_max_bytes=4096, raw_sql=True,
        overrides=(CaptureOverride(service=APP, bodies=True), CaptureOverride(APP, "http", body_max_bytes=64)),
    )
    table = run(h, "capture", "get").stdout
    assert table == (
        "headers:   off\n"
        "bodies:    off (limit 4096 bytes)\n"
        "raw sql:   on\n"
        "overrides (in order, later ones win):\n"
        "SERVICE                 PROTOCOL  HEADERS  BODIES  BODY MAX\n"
        f"{APP}  *         -        on      -\n"
        f"{APP}  http      -        -       64\n"
    )
    assert js(h, "capture", "clear", "--service", APP, "--protocol", "http")["overrides"] == [
        {"service": APP, "protocol": "*", "bodies": True}]
    assert js(h, "reset")["reset"] == ["capture"]
    assert h.holder.current.capture == CaptureSettings()


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["--body-max", "2M"], "hostagentctl: invalid argument: body_max_bytes must be between 0 and 1048576, "
                               "got 2097152"),
        (["--headers", "on", "--protocol", "smtp"],
         "hostagentctl: invalid argument: unknown protocol 'smtp'; "
         "valid protocols: http, http2, grpc, postgresql, mysql, redis, dns"),
        (["--raw-sql", "on", "--service", "x"], "hostagentctl: invalid argument: raw_sql applies to every service "
                                                "and protocol; give it without service/protocol"),
    ],
)
def test_refused_values_exit_1_with_the_reason(h, args: list[str], stderr: str) -> None:
    before = h.holder.current
    out = run(h, "capture", "set", *args)
    assert (out.returncode, out.stderr.strip()) == (1, stderr)
    assert h.holder.current == before


@pytest.mark.parametrize(
    "args",
    [
        ["capture"],
        ["capture", "set"],  # nothing to set
        ["capture", "set", "--service", APP],
        ["capture", "set", "--bodies", "maybe"],
        ["capture", "set", "--body-max", "lots"],
        ["capture", "set", "--body-max", "-5"],
        ["capture", "clear"],
    ],
)
def test_usage_errors_exit_2(h, args: list[str]) -> None:
    out = run(h, *args)
    assert out.returncode == 2, (args, out.stderr)
    assert "usage: hostagentctl" in out.stderr


def test_status_shows_capture_and_layering(h) -> None:
    doc = js(h, "status")
    assert doc["capture"]["headers"] is True
    assert doc["layering"]["sdk_spans_received"] == "0" and doc["layering"]["receiver_enabled"] is False
    text = run(h, "status").stdout
    assert "\ncapture\n  headers:   on\n  bodies:    off (limit 1024 bytes)\n" in text
    assert "\nlayering\n  receiver: off (no [receiver] grpc/http)   linking: off\n" in text
    assert "\ndrops:          export_queue=0, ring_buffer=3\ncapture losses: none\n" in text


def test_status_table_splits_capture_losses_and_shows_layering() -> None:
    """The table from a full status message (what a busy agent with a receiver answers)."""
    sys.path.insert(0, str(shim_dir()))  # hostagentctl from the checkout, installed or not
    from hostagentctl.output import capture_text, status_text

    st = pb.GetStatusResponse(
        version="1", drops={"ring_buffer": 2, "capture_truncated": 5, "capture_unpaired": 1},
        connections={"detected_redis": 3, "rejected_redis": 1, "unknown": 2, "detected_http": 4},
        capture=pb.Capture(headers=True, bodies=True, body_max_bytes=2048),
        layering=pb.Layering(receiver_enabled=True, linking_enabled=True, sdk_requests_received=3,
                             sdk_spans_received=12, sdk_spans_enriched=7, duplicates_dropped=6, sdk_spans_held=2,
                             agent_spans_held=1, requests_forwarded=3, hold_overflow=4, thread_links=8,
                             peer_links=9, counters={"agent_export_calls": 5, "telemetry_calls": 3}),
    )
    text = status_text(st)
    assert "\ndrops:          ring_buffer=2\ncapture losses: capture_truncated=5, capture_unpaired=1\n" in text
    assert "\nconnections:    detected_http=4, detected_redis=3, rejected_redis=1, unknown=2\n" in text
    assert text.endswith(
        "layering\n"
        "  receiver: on   linking: on\n"
        "  sdk spans received:  12 (in 3 requests)\n"
        "  sdk spans enriched:  7\n"
        "  duplicates dropped:  6\n"
        "  held now:            2 sdk, 1 agent\n"
        "  requests forwarded:  3\n"
        "  hold overflow:       4\n"
        "  linked:              8 same-thread, 9 client->server\n"
        "  telemetry calls:     3 + 5 of the agent's own exports (not traced)"
    )
    assert "\ncapture\n  headers:   on\n  bodies:    on (up to 2048 bytes)\n  raw sql:   off\n  overrides: none\n" \
        in text
    assert capture_text(pb.Capture()) == (
        "headers:   off\nbodies:    off (limit 0 bytes)\nraw sql:   off\noverrides: none"
    )
