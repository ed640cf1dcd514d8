"""Fixtures for the end-to-end tests: the packages built from this checkout, a booted systemd
machine (once per test module, powered off at the end), and a real OTLP receiver on the host.

The machine shares the host's network namespace (no --private-network), so 127.0.0.1 is the same
loopback on both sides: the agent inside exports to the receiver outside.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.nspawn import Container, ensure_host_tracefs, ensure_rootfs
from tests.support.otlp_receiver import OtlpGrpcReceiver
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "e2e"
OTLP_PORT = free_port()  # the machines share the host's network: a port no other run holds


PKG_DIR = WORK / "dist"  # seen as /pkgs in the machine


def build_packages(releases: tuple[int, ...], out: Path) -> dict[int, dict[str, Path]]:
    """``packaging/build.sh all`` (what ``make deb``/``make rpm`` run) into a directory of our own;
    all releases in one call, so they are made from one snapshot of the tree."""
    env = dict(os.environ, RELEASE=" ".join(map(str, releases)), OUT=str(out), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(REPO / "packaging" / "build.sh"), "all"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"packaging/build.sh all failed:\n{done.stdout}\n{done.stderr[-5000:]}"
    built: dict[int, dict[str, Path]] = {}
    for release in releases:
        built[release] = {}
        for kind, pattern in (("deb", f"hostagent_*-{release}_amd64.deb"),
                              ("rpm", f"hostagent-*-{release}.x86_64.rpm")):
            found = sorted(out.glob(pattern))
            assert len(found) == 1, f"expected one {pattern} in {out}, found {found}"
            built[release][kind] = found[0]
    return built


@pytest.fixture(scope="session")
def packages() -> dict[int, dict[str, Path]]:
    """Two builds of the same version (releases 1 and 2), to test upgrades between them."""
    for old in [*PKG_DIR.glob("hostagent_*.deb"), *PKG_DIR.glob("hostagent-*.rpm")]:
        old.unlink()
    return build_packages((1, 2), PKG_DIR)


@pytest.fixture(scope="session")
def debs(packages: dict[int, dict[str, Path]]) -> dict[int, Path]:
    return {release: built["deb"] for release, built in packages.items()}


@pytest.fixture(scope="session")
def rpms(packages: dict[int, dict[str, Path]]) -> dict[int, Path]:
    return {release: built["rpm"] for release, built in packages.items()}


@pytest.fixture(scope="session")
def rpm_package(rpms: dict[int, Path]) -> Path:
    return rpms[1]


@pytest.fixture(scope="module")
def machine(request: pytest.FixtureRequest) -> Iterator[Container]:
    """A module sets ``BIND_TRACEFS = False`` to boot without the host's tracefs, so that the unit
    has to mount it (as on a host where systemd's sys-kernel-tracing.mount did not)."""
    rootfs = ensure_rootfs(WORK)
    PKG_DIR.mkdir(parents=True, exist_ok=True)
    binds = [(str(PKG_DIR), "/pkgs", True)]
    if getattr(request.module, "BIND_TRACEFS", True):
        ensure_host_tracefs()
        binds.append(("/sys/kernel/tracing", "/sys/kernel/tracing", False))
    # Kernel headers for bcc: the agent finds /usr/src/linux-headers-* itself and merges them.
    binds += [(p, p, True) for p in ("/usr/src", "/lib/modules") if os.path.isdir(p)]
    box = Container(rootfs, binds, WORK / "nspawn.log").boot()
    try:
        yield box
    finally:
        box.poweroff()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpGrpcReceiver]:
    r = OtlpGrpcReceiver(port=OTLP_PORT).start()
    try:
        yield r
    finally:
        r.stop()
