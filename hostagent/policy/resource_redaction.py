"""Resources pass the redaction policy too: a process's command line (``process.command_args``)
can carry a token or a password as easily as a URL can, and it is exported with every span.

A Resource is redacted once per (Resource, redaction settings) and the result cached, so the hot
path pays one dict lookup per span. This module is compiled (setup.py): it runs for every span, and
with ``recent`` (identity's pid -> live entry, ``ServiceCache.recent``) a call of a known process
finds its Resource there, without calling ``resource_for``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from opentelemetry.sdk.resources import Resource

from hostagent.identity.resource import FrozenResource
from hostagent.policy.redaction import PiiCounters, redactor_for
from hostagent.settings import SettingsHolder

MAX_CACHED = 8192

# Command-line flags whose next argument (or "=value") is a secret, as common tools spell them:
# redis-cli -a, redis-server --requirepass/--masterauth, mysql --password, psql has none (PGPASSWORD
# lives in the environment, which identity never exports).
SECRET_FLAGS = frozenset({
    "-a", "--pass", "--password", "--passwd", "--requirepass", "--masterauth", "--token", "--api-key",
    "--apikey", "--secret", "--client-secret", "--auth", "--access-token",
})
FLAG_TOKEN = "[REDACTED:password_flag]"
# Identifiers the agent itself read from the kernel, Docker or /etc: hex and uuids, never
# personal data, but long enough to hold a digit run that passes the card check (a container id
# with 4569758610681387 in it came out as ...d[REDACTED:card]a3de954, no longer matching its
# container). Users' own attributes (OTEL_RESOURCE_ATTRIBUTES) and command lines are scanned.
IDENTIFIER_KEYS = frozenset({
    "container.id", "container.image.id", "host.id", "service.instance.id", "process.linux.cgroup",
    "k8s.pod.uid",
})


def redact_argv(args: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """``args`` with the value of every secret-bearing flag replaced; and how many were."""
    out: list[str] = []
    replaced = 0
    hide_next = False
    for arg in args:
        if hide_next:
            out.append(FLAG_TOKEN)
            replaced += 1
            hide_next = False
            continue
        flag, eq, _value = arg.partition("=")
        if flag in SECRET_FLAGS:
            if eq:
                out.append(f"{flag}={FLAG_TOKEN}")
                replaced += 1
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return tuple(out), replaced


class RedactedResources:
    """Wraps ``resource_for(call) -> Resource`` so every Resource it returns is redacted.

    ``recent``: pid -> an entry whose ``resource`` (None until built) is what ``resource_for``
    answers for a call of that pid (``ServiceCache.recent`` beside ``ServiceCache.resource_of``,
    which reads the same entry first): a built one is used as it is, anything else asks
    ``resource_for``."""

    def __init__(self, resource_for: Callable[[Any], Resource], settings: SettingsHolder, key: bytes,
                 counters: PiiCounters, recent: Optional[dict[int, Any]] = None) -> None:
        self._resource_for = resource_for
        self._settings = settings
        self._key = key
        self._counters = counters
        self._recent = recent
        # id(resource) -> (resource, redaction settings, redacted); the resource is kept so its id
        # cannot be reused by another object while the entry lives.
        self._cache: dict[int, tuple[Resource, Any, Resource]] = {}

    def __call__(self, call: Any) -> Resource:
        resource: Optional[Resource] = None
        recent = self._recent
        if recent is not None:
            conn = call.conn
            if conn is not None:
                entry = recent.get(conn.pid)
                if entry is not None:
                    resource = entry.resource
        if resource is None:
            resource = self._resource_for(call)
        redaction = self._settings.current.redaction
        hit = self._cache.get(id(resource))
        if hit is not None and hit[0] is resource and hit[1] is redaction:
            return hit[2]
        result = self.redact(resource, redaction)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[id(resource)] = (resource, redaction, result)
        return result

    def redact(self, resource: Resource, redaction: Any) -> Resource:
        attributes = dict(resource.attributes)
        counts: dict[str, int] = {}
        args = attributes.get("process.command_args")
        if isinstance(args, tuple) and args:
            attributes["process.command_args"], hidden = redact_argv(args)
            if hidden:
                counts["password_flag"] = hidden
        redactor = redactor_for(redaction, self._key)
        if redactor.active:
            ids = {k: attributes.pop(k) for k in IDENTIFIER_KEYS if k in attributes}
            attributes, found = redactor.redact_attributes(attributes)
            attributes.update(ids)
            for kind, n in found.items():
                counts[kind] = counts.get(kind, 0) + n
        if not counts:
            return resource
        self._counters.add(counts)  # counted once per process, not per span
        return FrozenResource(attributes, resource.schema_url)
