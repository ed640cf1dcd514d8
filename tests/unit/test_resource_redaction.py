"""Resources (command lines above all) pass the redaction policy before export."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Optional

import pytest
from opentelemetry.sdk.resources import Resource

from hostagent.policy.redaction import PiiCounters
from hostagent.policy.resource_redaction import FLAG_TOKEN, RedactedResources, redact_argv
from hostagent.settings import RedactionRule, RedactionSettings, RuntimeSettings, SettingsHolder

T = FLAG_TOKEN


@pytest.mark.parametrize(
    ("argv", "want", "hidden"),
    [
        (("redis-cli", "-h", "127.0.0.1", "-a", "s3cret", "PING"),
         ("redis-cli", "-h", "127.0.0.1", "-a", T, "PING"), 1),
        (("redis-server", "--requirepass", "pw1", "--masterauth=pw2"),
         ("redis-server", "--requirepass", T, f"--masterauth={T}"), 2),
        (("mysql", "--password=hunter2", "-u", "app"), ("mysql", f"--password={T}", "-u", "app"), 1),
        (("curl", "-s", "http://x/"), ("curl", "-s", "http://x/"), 0),
        (("tool", "-a"), ("tool", "-a"), 0),  # a flag at the end hides nothing
    ],
)
def test_secret_flags_in_argv(argv: tuple[str, ...], want: tuple[str, ...], hidden: int) -> None:
    assert redact_argv(argv) == (want, hidden)


def make(resource: Resource, redaction: RedactionSettings) -> tuple[RedactedResources, PiiCounters]:
    holder = SettingsHolder(RuntimeSettings(redaction=redaction))
    counters = PiiCounters()
    return RedactedResources(lambda call: resource, holder, b"k" * 32, counters), counters


def test_command_line_secrets_never_reach_the_resource() -> None:
    resource = Resource({
        "service.name": "curl",
        "process.command_args": ("curl", "-H", "Authorization: Bearer sekrit-tok-123",
                                 "http://127.0.0.1/find?q=ZZCANARY4711&mail=bob@example.com", "-a", "pw"),
    })
    redaction = RedactionSettings(rules=(RedactionRule("canary", r"ZZCANARY\d+"),))
    redacted, counters = make(resource, redaction)
    out = redacted(object())
    text = repr(dict(out.attributes))
    for secret in ("sekrit-tok-123", "ZZCANARY4711", "bob@example.com", "'pw'"):
        assert secret not in text
    assert out.attributes["service.name"] == "curl"
    assert out.attributes["process.command_args"][5] == T
    assert redacted(object()) is out  # cached: one redaction per resource
    assert counters.snapshot()["password_flag"] == 1
    assert counters.snapshot()["canary"] == 1


def test_clean_resource_is_returned_as_is() -> None:
    resource = Resource({"service.name": "nginx", "process.command_args": ("nginx", "-g", "daemon off;")})
    redacted, counters = make(resource, RedactionSettings())
    assert redacted(object()) is resource
    assert counters.snapshot() == {}


def test_identifiers_are_not_taken_for_card_numbers() -> None:
    """A real container id (docker run, this machine) with a Luhn-valid 16-digit run: it must
    reach the backend whole, as must the cgroup path that names it; args are still scanned."""
    container = "96602d6d85bd4439527376552c94ef2c12330843d4569758610681387a3de954"
    ids = {"container.id": container, "process.linux.cgroup": f"/docker/{container}",
           "container.image.id": f"sha256:{container}", "host.id": "4569758610681387aaaaaaaaaaaaaaaa",
           "service.instance.id": "45697586-1068-1387-aaaa-aaaaaaaaaaaa"}  # fmt: skip
    resource = Resource({**ids, "service.name": "w", "process.command_args": ("pay", "4569758610681387")})
    redacted, counters = make(resource, RedactionSettings())
    out = redacted(object())
    assert {k: out.attributes[k] for k in ids} == ids
    assert out.attributes["process.command_args"] == ("pay", "[REDACTED:card]")
    assert counters.snapshot() == {"card": 1}


class Entry:
    """identity's pid -> entry (``ServiceCache.recent``): its Resource once built, None before."""

    def __init__(self, resource: Optional[Resource]) -> None:
        self.resource = resource


def test_a_built_resource_of_a_recent_entry_is_used_without_asking_resource_for() -> None:
    built, other = Resource({"service.name": "nginx"}), Resource({"service.name": "from-resource-for"})
    asked: list[Any] = []

    def resource_for(call: Any) -> Resource:
        asked.append(call)
        return other

    recent: dict[int, Any] = {10: Entry(built), 11: Entry(None)}
    holder = SettingsHolder(RuntimeSettings())
    redacted = RedactedResources(resource_for, holder, b"k" * 32, PiiCounters(), recent=recent)
    known, unbuilt, unknown, no_conn = (
        SimpleNamespace(conn=SimpleNamespace(pid=10)), SimpleNamespace(conn=SimpleNamespace(pid=11)),
        SimpleNamespace(conn=SimpleNamespace(pid=12)), SimpleNamespace(conn=None))
    assert redacted(known) is built and asked == []
    assert redacted(unbuilt) is other and redacted(unknown) is other and redacted(no_conn) is other
    assert asked == [unbuilt, unknown, no_conn]


def test_a_recent_entrys_resource_is_redacted_too() -> None:
    secret = Resource({"service.name": "redis", "process.command_args": ("redis-cli", "-a", "pw")})
    holder = SettingsHolder(RuntimeSettings())
    redacted = RedactedResources(lambda call: Resource({}), holder, b"k" * 32, PiiCounters(),
                                 recent={10: Entry(secret)})
    out = redacted(SimpleNamespace(conn=SimpleNamespace(pid=10)))
    assert out.attributes["process.command_args"] == ("redis-cli", "-a", T)
