"""parse_cgroup over the shapes /proc/PID/cgroup takes on v1, v2 and hybrid hosts, per runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostagent.identity.cgroup import CgroupInfo, accepted_instance_end, parse_cgroup, unit_service_name

ID = "4f6d7ce1c12c1c247c8e3c5605ebdb02f9122851a9bb38c54a4264654e882ebf"
ID2 = "e897fddf0a64fa0163c10df75e0ec6c0546b7c4e0b10c151b9398df619a720dd"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "proc"

# This machine's own shell, verbatim: hybrid v1, a sandbox memory cgroup, systemd at the root.
SANDBOX = (
    "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n"
    "4:memory:/process_api/aae8487b3fcfe489151f17e8dc415751\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"
)

CASES: list[tuple[str, str, dict[str, Any]]] = [
    # (case id, cgroup text, expected CgroupInfo fields)
    (
        "v2 system service",
        "0::/system.slice/nginx.service\n",
        dict(path="/system.slice/nginx.service", systemd_unit="nginx.service", slice="system.slice"),
    ),
    (
        "v2 docker systemd driver",
        f"0::/system.slice/docker-{ID}.scope\n",
        dict(runtime="docker", container_id=ID, systemd_unit=f"docker-{ID}.scope", slice="system.slice"),
    ),
    (
        "v1 docker cgroupfs driver",
        f"12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n",
        dict(path=f"/docker/{ID}", runtime="docker", container_id=ID, systemd_unit=None),
    ),
    (
        "docker in docker: innermost wins",
        f"0::/docker/{ID}/docker/{ID2}\n",
        dict(runtime="docker", container_id=ID2),
    ),
    (
        "containerd under kubepods (systemd driver)",
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5e1d7c52_8f0e_4a8b_9a1c_2b3c4d5e6f70"
        f".slice/cri-containerd-{ID}.scope\n",
        dict(
            runtime="containerd",
            container_id=ID,
            pod_uid="5e1d7c52-8f0e-4a8b-9a1c-2b3c4d5e6f70",
            slice="kubepods-burstable-pod5e1d7c52_8f0e_4a8b_9a1c_2b3c4d5e6f70.slice",
        ),
    ),
    (
        "containerd nested under its service (k3s)",
        f"0::/system.slice/containerd.service/kubepods-besteffort-pod5e1d7c52_8f0e_4a8b_9a1c_2b3c4d5e6f70.slice"
        f":cri-containerd:{ID}\n",
        dict(
            runtime="containerd",
            container_id=ID,
            systemd_unit="containerd.service",
            pod_uid="5e1d7c52-8f0e-4a8b-9a1c-2b3c4d5e6f70",
        ),
    ),
    (
        "cri-o scope",
        f"0::/kubepods.slice/kubepods-pod5e1d7c52_8f0e_4a8b_9a1c_2b3c4d5e6f70.slice/crio-{ID}.scope\n",
        dict(runtime="cri-o", container_id=ID, pod_uid="5e1d7c52-8f0e-4a8b-9a1c-2b3c4d5e6f70"),
    ),
    (
        "cri-o conmon is not the container",
        f"0::/machine.slice/crio-conmon-{ID}.scope\n",
        dict(runtime=None, container_id=None, systemd_unit=f"crio-conmon-{ID}.scope"),
    ),
    (
        "kubepods cgroupfs: runtime unknown",
        f"4:memory:/kubepods/burstable/pod5e1d7c52-8f0e-4a8b-9a1c-2b3c4d5e6f70/{ID}\n",
        dict(runtime=None, container_id=ID, pod_uid="5e1d7c52-8f0e-4a8b-9a1c-2b3c4d5e6f70"),
    ),
    (
        "podman rootful",
        f"0::/machine.slice/libpod-{ID}.scope\n",
        dict(runtime="podman", container_id=ID, slice="machine.slice"),
    ),
    (
        "podman rootless, process in a sub-cgroup",
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n",
        dict(
            runtime="podman",
            container_id=ID,
            systemd_unit=f"libpod-{ID}.scope",
            is_user_unit=True,
            user_uid=1000,
        ),
    ),
    ("podman conmon", f"0::/machine.slice/libpod-conmon-{ID}.scope\n", dict(runtime=None, container_id=None)),
    ("podman cgroupfs", f"4:memory:/libpod_parent/libpod-{ID}\n", dict(runtime="podman", container_id=ID)),
    (
        "user unit",
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/syncthing.service\n",
        dict(systemd_unit="syncthing.service", slice="app.slice", is_user_unit=True, user_uid=1000),
    ),
    (
        "user manager itself",
        "0::/user.slice/user-1000.slice/user@1000.service/init.scope\n",
        dict(systemd_unit="init.scope", slice="user-1000.slice", is_user_unit=True, user_uid=1000),
    ),
    (
        "login session scope",
        "0::/user.slice/user-1000.slice/session-3.scope\n",
        dict(systemd_unit="session-3.scope", slice="user-1000.slice", is_user_unit=False),
    ),
    (
        "nested slices, template instance",
        "0::/system.slice/system-worker.slice/worker@3.service\n",
        dict(systemd_unit="worker@3.service", slice="system-worker.slice"),
    ),
    (
        "delegated sub-cgroup of a service",
        "0::/system.slice/buildkit.service/runc-abc\n",
        dict(systemd_unit="buildkit.service", slice="system.slice"),
    ),
    (
        "hybrid: unified is / so name=systemd speaks",
        "9:name=systemd:/system.slice/demo.service\n4:memory:/system.slice/demo.service\n1:cpu:/\n0::/\n",
        dict(path="/system.slice/demo.service", systemd_unit="demo.service", slice="system.slice"),
    ),
    (
        "hybrid: unified path preferred when set",
        "1:name=systemd:/system.slice/old.service\n0::/system.slice/new.service\n",
        dict(path="/system.slice/new.service", systemd_unit="new.service"),
    ),
    (
        "v1 without name=systemd",
        "3:cpu,cpuacct:/system.slice/cron.service\n2:memory:/\n",
        dict(systemd_unit="cron.service", slice="system.slice"),
    ),
    (
        "this sandbox: nothing known",
        SANDBOX,
        dict(
            path="/process_api/aae8487b3fcfe489151f17e8dc415751",
            runtime=None,
            container_id=None,
            systemd_unit=None,
        ),
    ),
    ("root only", "0::/\n", dict(path="/", systemd_unit=None)),
    ("empty", "", dict(path="")),
    ("garbage", "not a cgroup line\n::\n", dict(path="/", systemd_unit=None)),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_cgroup(text: str, expected: dict[str, Any]) -> None:
    info = parse_cgroup(text)
    for key, value in expected.items():
        assert getattr(info, key) == value, key


def test_real_docker_container_process_captured_here() -> None:
    """/proc/<pid>/cgroup of a busybox container started by the real dockerd on this machine."""
    text = (FIXTURES / "host" / "proc" / "14938" / "cgroup").read_text()
    assert parse_cgroup(text) == CgroupInfo(path=f"/docker/{ID}", runtime="docker", container_id=ID)


@pytest.mark.parametrize(
    ("unit", "service"),
    [
        ("nginx.service", "nginx.service"),
        ("session-3.scope", None),
        ("user@1000.service", None),  # the user manager is not an application
        (f"docker-{ID}.scope", None),
        ("worker@3.service", "worker@3.service"),
    ],
)
def test_service_unit(unit: str, service: Optional[str]) -> None:
    assert CgroupInfo(systemd_unit=unit).service_unit == service


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("nginx.service", "nginx"),
        ("worker@3.service", "worker"),
        ("getty@tty1.service", "getty"),
        ("foo\\x2dbar.service", "foo-bar"),
        ("@weird.service", "@weird"),
    ],
)
def test_unit_service_name(unit: str, name: str) -> None:
    assert unit_service_name(unit) == name


@given(st.text(alphabet=st.sampled_from(list("0123456789:/.-@abcdefsliceservicopdkrz\n\\x")), max_size=300))
def test_parse_cgroup_never_raises(text: str) -> None:
    info = parse_cgroup(text)
    assert isinstance(info, CgroupInfo)


@given(st.text(max_size=200))
def test_parse_cgroup_never_raises_on_any_text(text: str) -> None:
    parse_cgroup(text)


@pytest.mark.parametrize(
    ("unit", "end"),
    [
        # systemd Accept=yes: "<prefix>@<count>-<local>-<remote>.service" (a real one: fixtures/proc/accept)
        ("hello@0-127.0.0.1:22081-127.0.0.1:55334.service", ("127.0.0.1", 22081)),
        ("sshd@12-10.0.0.5:22-10.0.0.9:50022.service", ("10.0.0.5", 22)),
        ("foo@3-::1:8080-::1:41234.service", ("::1", 8080)),  # IPv6 prints without brackets
        ("foo@1-::ffff:127.0.0.1:8080-::ffff:127.0.0.1:4123.service", ("127.0.0.1", 8080)),
        ("worker@3.service", None),  # an ordinary instance
        ("getty@tty1.service", None),
        ("foo@a-127.0.0.1:80-127.0.0.1:4.service", None),  # no count
        ("foo@0-127.0.0.1-127.0.0.1:4.service", None),  # no local port
        ("foo@0-127.0.0.1:80-127.0.0.1:4.scope", None),
        ("nginx.service", None),
    ],
)
def test_accepted_instance_end(unit: str, end: Optional[tuple[str, int]]) -> None:
    assert accepted_instance_end(unit) == end
