"""service.name / service.namespace for a process: the precedence rules, as one pure function.

In this order, first answer wins (README "Service naming"):
1. ``[[services]]`` rules of the config file -- first rule whose matchers all match;
2. ``OTEL_SERVICE_NAME``, then ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, from the
   process's environment, then from the container's configured env -- so the agent and an SDK in
   the same process name it the same (the SDK spec gives OTEL_SERVICE_NAME priority too);
3. the Compose service label (``com.docker.compose.service``; project -> namespace);
4. the container's name;
5. the systemd unit without ``.service`` (system and user units; never session or other scopes,
   and not when the process is in a container: the unit would be the runtime's, not the app's;
   in an Internet superserver's unit, only for the superserver: the per-connection servers inetd
   forks stay in its unit, and each is its own service);
6. the program name (interpreters: the script or module -- see ``interpreters``).

A namespace comes from the rule (config ``namespace``), ``service.namespace`` in
OTEL_RESOURCE_ATTRIBUTES, or the Compose project, whichever is first in that order.
"""

from __future__ import annotations

import fnmatch
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from hostagent.identity.cgroup import CgroupInfo, unit_service_name
from hostagent.identity.docker import ContainerInfo
from hostagent.identity.interpreters import program_name
from hostagent.identity.procfs import ProcessInfo

COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_PROJECT = "com.docker.compose.project"

# What decided the name (exposed on the Service for debugging and `hostagentctl`).
RULE_CONFIG = "config"
RULE_OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
RULE_OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
RULE_COMPOSE = "compose"
RULE_CONTAINER_NAME = "container_name"
RULE_SYSTEMD = "systemd_unit"
RULE_EXECUTABLE = "executable"


# Units of Internet superservers (inetd "nowait" services run in them) and their programs.
SUPERSERVER_UNITS = frozenset({"inetd", "openbsd-inetd", "inetutils-inetd", "xinetd"})
SUPERSERVER_PROGRAMS = frozenset({"inetd", "xinetd"})


class IdentityConfigError(ValueError):
    """A ``[[services]]`` problem, worded for the user: file, key, what was expected."""


@dataclass(frozen=True)
class ServiceRule:
    """One ``[[services]]`` entry. Unset matchers match anything; set ones must all match."""

    name: str
    namespace: Optional[str] = None
    exe: Optional[str] = None  # glob over the executable path *or* its basename
    cmdline: Optional[re.Pattern[str]] = None  # searched in the space-joined command line
    systemd_unit: Optional[str] = None  # glob over "nginx.service" or "nginx"
    container_name: Optional[str] = None  # glob
    image: Optional[str] = None  # glob over "name" or "name:tag"
    label: Optional[tuple[str, str]] = None  # (key, value glob)

    def matches(self, proc: ProcessInfo, container: Optional[ContainerInfo], cgroup: CgroupInfo) -> bool:
        if self.exe is not None:
            base = proc.exe.rsplit("/", 1)[-1]
            if not (fnmatch.fnmatchcase(proc.exe, self.exe) or fnmatch.fnmatchcase(base, self.exe)):
                return False
        if self.cmdline is not None and not self.cmdline.search(" ".join(proc.cmdline)):
            return False
        if self.systemd_unit is not None:
            unit = cgroup.systemd_unit
            if unit is None or not (
                fnmatch.fnmatchcase(unit, self.systemd_unit)
                or fnmatch.fnmatchcase(unit.rsplit(".", 1)[0], self.systemd_unit)
            ):
                return False
        if self.container_name is not None:
            if container is None or not fnmatch.fnmatchcase(container.name, self.container_name):
                return False
        if self.image is not None:
            if container is None:
                return False
            refs = [container.image_name] + [f"{container.image_name}:{t}" for t in container.image_tags]
            if not any(fnmatch.fnmatchcase(ref, self.image) for ref in refs):
                return False
        if self.label is not None:
            key, pattern = self.label
            if container is None or key not in container.labels:
                return False
            if not fnmatch.fnmatchcase(container.labels[key], pattern):
                return False
        return True


_MATCHERS = ("exe", "cmdline", "systemd_unit", "container_name", "image", "label")
_KEYS = ("name", "namespace", *_MATCHERS)


def parse_service_rules(raw: list[dict[str, Any]], source: str) -> list[ServiceRule]:
    """Validate ``[[services]]`` tables (as tomli gives them). ``source`` is the file path, used
    in error messages like ``/etc/hostagent/config.toml: services[2].cmdline: expected a valid
    regular expression, got '('``."""
    if not isinstance(raw, list):
        raise IdentityConfigError(f"{source}: services: expected an array of tables ([[services]])")
    rules = []
    for index, entry in enumerate(raw):
        where = f"{source}: services[{index}]"
        if not isinstance(entry, dict):
            raise IdentityConfigError(f"{where}: expected a table, got {entry!r}")
        unknown = sorted(set(entry) - set(_KEYS))
        if unknown:
            expected = ", ".join(_KEYS)
            raise IdentityConfigError(f"{where}.{unknown[0]}: unknown key (expected one of {expected})")
        for key in _KEYS:
            if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
                raise IdentityConfigError(f"{where}.{key}: expected a non-empty string, got {entry[key]!r}")
        if "name" not in entry:
            raise IdentityConfigError(f"{where}.name: required (the service.name to give)")
        if not any(key in entry for key in _MATCHERS):
            raise IdentityConfigError(f"{where}: expected at least one matcher ({', '.join(_MATCHERS)})")
        pattern = None
        if "cmdline" in entry:
            try:
                pattern = re.compile(entry["cmdline"])
            except re.error as exc:
                raise IdentityConfigError(
                    f"{where}.cmdline: expected a valid regular expression, got {entry['cmdline']!r} ({exc})"
                ) from exc
        label = None
        if "label" in entry:
            key, sep, value = entry["label"].partition("=")
            if not sep or not key:
                raise IdentityConfigError(f"{where}.label: expected \"key=value\", got {entry['label']!r}")
            label = (key, value)
        rules.append(
            ServiceRule(
                name=entry["name"],
                namespace=entry.get("namespace"),
                exe=entry.get("exe"),
                cmdline=pattern,
                systemd_unit=entry.get("systemd_unit"),
                container_name=entry.get("container_name"),
                image=entry.get("image"),
                label=label,
            )
        )
    return rules


def parse_resource_attributes(value: str) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES: ``k=v,k2=v2`` with percent-encoded values (W3C Baggage octets).
    Malformed pairs are skipped, as the SDK does."""
    attrs: dict[str, str] = {}
    for pair in value.split(","):
        key, sep, val = pair.partition("=")
        key = key.strip()
        if sep and key:
            attrs[key] = urllib.parse.unquote(val.strip())
    return attrs


@dataclass(frozen=True, slots=True)
class NameDecision:
    name: str
    namespace: Optional[str]
    rule: str  # one of the RULE_* constants


def _from_env(env: Mapping[str, str]) -> tuple[Optional[str], Optional[str], str]:
    attrs = parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    namespace = attrs.get("service.namespace") or None
    explicit = env.get("OTEL_SERVICE_NAME", "").strip()
    if explicit:
        return explicit, namespace, RULE_OTEL_SERVICE_NAME
    from_attrs = attrs.get("service.name", "").strip()
    if from_attrs:
        return from_attrs, namespace, RULE_OTEL_RESOURCE_ATTRIBUTES
    return None, namespace, ""


def decide_name(
    rules: list[ServiceRule],
    proc: ProcessInfo,
    container: Optional[ContainerInfo],
    cgroup: CgroupInfo,
) -> NameDecision:
    env_name, env_namespace, env_rule = _from_env(proc.env)
    if env_name is None and container is not None:
        env_name, container_namespace, env_rule = _from_env(container.env)
        env_namespace = env_namespace or container_namespace
    project = container.labels.get(COMPOSE_PROJECT) if container is not None else None
    namespace = env_namespace or project or None

    for rule in rules:
        if rule.matches(proc, container, cgroup):
            return NameDecision(rule.name, rule.namespace or namespace, RULE_CONFIG)
    if env_name is not None:
        return NameDecision(env_name, namespace, env_rule)
    if container is not None:
        compose = container.labels.get(COMPOSE_SERVICE, "").strip()
        if compose:
            return NameDecision(compose, namespace, RULE_COMPOSE)
        if container.name:
            return NameDecision(container.name, namespace, RULE_CONTAINER_NAME)
    unit = cgroup.service_unit
    if unit is not None and cgroup.container_id is None:
        name = unit_service_name(unit)
        if name not in SUPERSERVER_UNITS:
            return NameDecision(name, namespace, RULE_SYSTEMD)
        program = program_name(proc.exe, proc.cmdline, proc.comm)
        if program == name or program in SUPERSERVER_PROGRAMS:
            return NameDecision(name, namespace, RULE_SYSTEMD)
        return NameDecision(program, namespace, RULE_EXECUTABLE)
    return NameDecision(program_name(proc.exe, proc.cmdline, proc.comm), namespace, RULE_EXECUTABLE)
