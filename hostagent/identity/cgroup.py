"""Pure parser for the text of /proc/PID/cgroup: container runtime + id, systemd unit and slice.

One line per hierarchy, ``hierarchy-ID:controller-list:path``:
- cgroup v2 (unified): a single ``0::/system.slice/nginx.service``;
- cgroup v1: one line per controller, ``4:memory:/docker/<id>``; systemd's own named hierarchy
  is ``1:name=systemd:/system.slice/nginx.service``;
- hybrid (this project's dev machines): v1 controllers, ``name=systemd`` and a ``0::`` line.

Which path speaks for the process: the unified path when it is not ``/`` (on hybrid hosts it is
often ``/`` while ``name=systemd`` has the real one), then ``name=systemd``, then any v1
controller. The container id is looked for in that order across all paths, because on v1 hosts
some controllers (e.g. a sandbox's own memory cgroup) may name something else.

Shapes recognised (innermost segment wins, so docker-in-docker finds the inner container):
- ``/docker/<64hex>`` (cgroupfs driver) and ``docker-<64hex>.scope`` (systemd driver)
- ``cri-containerd-<64hex>.scope`` and ``...slice:cri-containerd:<64hex>`` (containerd)
- ``crio-<64hex>.scope`` (CRI-O; ``crio-conmon-<id>.scope`` is the monitor, not the container)
- ``libpod-<64hex>.scope`` / ``/libpod_parent/libpod-<64hex>`` (podman; ``libpod-conmon-`` is
  the monitor)
- ``/kubepods/<qos>/pod<uid>/<64hex>`` and ``kubepods-<qos>-pod<uid>.slice`` (Kubernetes pods)
- ``user@1000.service/app.slice/foo.service`` (a user unit) and ``session-N.scope`` (a login
  session: a scope, not a service, so never a service name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_HEX64 = r"[0-9a-f]{64}"
# (regex over one path segment, runtime). Order matters only where shapes overlap: the conmon
# scopes must be rejected before the generic ``crio-``/``libpod-`` shapes accept them.
_CONMON = re.compile(r"^(?:crio|libpod)-conmon-[0-9a-f]{64}\.scope$")
_SEGMENT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^docker-({_HEX64})\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-({_HEX64})\.scope$"), "containerd"),
    (re.compile(rf"^crio-({_HEX64})\.scope$"), "cri-o"),
    (re.compile(rf"^libpod-({_HEX64})(?:\.scope)?$"), "podman"),
    # systemd cgroup driver nested under a runtime service (k3s, some containerd setups).
    (re.compile(rf"^[^:]*:cri-containerd:({_HEX64})$"), "containerd"),
    (re.compile(rf"^[^:]*:crio:({_HEX64})$"), "cri-o"),
    (re.compile(rf"^[^:]*:docker:({_HEX64})$"), "docker"),
)
_BARE_ID = re.compile(rf"^({_HEX64})$")
_POD_SEGMENT = re.compile(r"^pod([0-9a-f-]{36})$")
_POD_SLICE = re.compile(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$")
_USER_MANAGER = re.compile(r"^user@(\d+)\.service$")
_UNIT_SUFFIXES = (".service", ".scope")


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    """What a process's cgroup membership says about it. Empty fields mean "not known"."""

    path: str = ""  # the path that speaks for the process (see module docstring)
    runtime: Optional[str] = None  # "docker" | "containerd" | "cri-o" | "podman" | None
    container_id: Optional[str] = None  # 64 hex; runtime may be None (kubepods on cgroupfs)
    systemd_unit: Optional[str] = None  # innermost unit, e.g. "nginx.service", "session-3.scope"
    slice: Optional[str] = None  # innermost slice above the unit, e.g. "system.slice", "app.slice"
    is_user_unit: bool = False  # the unit runs under a user manager (user@UID.service)
    user_uid: Optional[int] = None  # UID of that user manager
    pod_uid: Optional[str] = None  # Kubernetes pod UID, dashed form

    @property
    def service_unit(self) -> Optional[str]:
        """The unit when it is a ``.service`` (not a scope, not the user manager itself)."""
        unit = self.systemd_unit
        if unit is None or not unit.endswith(".service") or _USER_MANAGER.match(unit):
            return None
        return unit


def _ranked_paths(text: str) -> list[str]:
    """Non-root paths, best first: unified, then name=systemd, then v1 controllers in file order."""
    unified: list[str] = []
    named: list[str] = []
    others: list[str] = []
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/"):
            continue
        hierarchy, controllers, path = parts
        path = path.rstrip("/") or "/"
        if path == "/":
            continue
        if hierarchy == "0" and controllers == "":
            unified.append(path)
        elif controllers == "name=systemd":
            named.append(path)
        else:
            others.append(path)
    seen: set[str] = set()
    ranked: list[str] = []
    for path in unified + named + others:
        if path not in seen:
            seen.add(path)
            ranked.append(path)
    return ranked


def _container_in(segments: list[str]) -> tuple[Optional[str], Optional[str]]:
    """(runtime, id) of the innermost container segment, or (None, None)."""
    for index in range(len(segments) - 1, -1, -1):
        segment = segments[index]
        if _CONMON.match(segment):
            continue
        for pattern, runtime in _SEGMENT_RULES:
            match = pattern.match(segment)
            if match:
                return runtime, match.group(1)
        match = _BARE_ID.match(segment)
        if match:
            parent = segments[index - 1] if index > 0 else ""
            if parent == "docker":
                return "docker", match.group(1)
            if parent == "libpod_parent":
                return "podman", match.group(1)
            # kubepods on the cgroupfs driver: the path does not say which runtime.
            return None, match.group(1)
    return None, None


def _pod_in(segments: list[str]) -> Optional[str]:
    for segment in segments:
        segment = segment.split(":", 1)[0]  # "<pod slice>:cri-containerd:<id>"
        match = _POD_SEGMENT.match(segment) or _POD_SLICE.match(segment)
        if match:
            return match.group(1).replace("_", "-")
    return None


def _unit_in(segments: list[str]) -> tuple[Optional[str], Optional[str], Optional[int]]:
    """(innermost unit, innermost slice above it, uid of the user manager above it)."""
    unit_index = -1
    for index in range(len(segments) - 1, -1, -1):
        if segments[index].endswith(_UNIT_SUFFIXES):
            unit_index = index
            break
    if unit_index < 0:
        return None, None, None
    slice_name = None
    uid = None
    for segment in segments[:unit_index]:
        if segment.endswith(".slice"):
            slice_name = segment
        match = _USER_MANAGER.match(segment)
        if match:
            uid = int(match.group(1))
    return segments[unit_index], slice_name, uid


def parse_cgroup(text: str) -> CgroupInfo:
    """Parse the text of /proc/PID/cgroup. Never raises; unknown shapes give an empty CgroupInfo."""
    paths = _ranked_paths(text)
    if not paths:
        return CgroupInfo(path="/" if text.strip() else "")
    runtime: Optional[str] = None
    container_id: Optional[str] = None
    pod_uid: Optional[str] = None
    for path in paths:
        segments = [s for s in path.split("/") if s]
        runtime, container_id = _container_in(segments)
        if container_id is not None:
            pod_uid = _pod_in(segments)
            break
    primary = paths[0]
    unit, slice_name, uid = _unit_in([s for s in primary.split("/") if s])
    if unit is None:
        # v1 hosts without name=systemd may still carry units in a controller path.
        for path in paths[1:]:
            unit, slice_name, uid = _unit_in([s for s in path.split("/") if s])
            if unit is not None:
                break
    return CgroupInfo(
        path=primary,
        runtime=runtime,
        container_id=container_id,
        systemd_unit=unit,
        slice=slice_name,
        is_user_unit=uid is not None,
        user_uid=uid,
        pod_uid=pod_uid,
    )


_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def unit_service_name(unit: str) -> str:
    """``nginx.service`` -> ``nginx``; ``worker@3.service`` -> ``worker`` (instances of one
    template are one service, told apart by service.instance.id); systemd's ``\\x2d`` escapes
    are undone so the name reads as the user wrote it."""
    name = unit[: -len(".service")] if unit.endswith(".service") else unit
    if "@" in name:
        name = name.split("@", 1)[0] or name
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


def accepted_instance_end(unit: str) -> Optional[tuple[str, int]]:
    """The local end that a systemd ``Accept=yes`` socket's per-connection unit was started for,
    from its instance name: ``foo@3-127.0.0.1:8080-127.0.0.1:41234.service`` -> ("127.0.0.1", 8080)
    (IPv6 ends print without brackets: ``foo@0-::1:8080-::1:41234.service``). None for any other
    unit. systemd names such instances "<count>-<local>-<remote>" (an address holds no '-')."""
    if not unit.endswith(".service"):
        return None
    _, at, instance = unit[: -len(".service")].partition("@")
    parts = instance.split("-")
    if not at or len(parts) != 3 or not parts[0].isdigit():
        return None
    address, colon, port = parts[1].rpartition(":")
    if not colon or not address or not port.isdigit() or not parts[2].rpartition(":")[2].isdigit():
        return None
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    return address, int(port)
