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

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "build" / "e2e"
OTLP_PORT = 18801  # this helper's port range is 18800-18899


def build_package(kind: str, release: int, out: Path) -> Path:
    """``packaging/build.sh`` as ``make deb``/``make rpm`` runs it, into a directory of our own."""
    env = dict(os.environ, RELEASE=str(release), OUT=str(out), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(REPO / "packaging" / "build.sh"), kind], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"packaging/build.sh {kind} failed:\n{done.stdout}\n{done.stderr[-5000:]}"
    pattern = f"hostagent_*-{release}_amd64.deb" if kind == "deb" else f"hostagent-*-{release}.x86_64.rpm"
    found = sorted(out.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {out}, found {found}"
    return found[0]


DEB_DIR = WORK / "dist"  # seen as /pkgs in the machine
RPM_DIR = WORK / "dist-rpm"  # seen as /rpms


@pytest.fixture(scope="session")
def debs() -> dict[int, Path]:
    """Two builds of the same version (releases 1 and 2), to test an upgrade between them."""
    for old in DEB_DIR.glob("hostagent_*"):
        old.unlink()
    return {release: build_package("deb", release, DEB_DIR) for release in (1, 2)}


@pytest.fixture(scope="session")
def rpms() -> dict[int, Path]:
    for old in RPM_DIR.glob("hostagent-*"):
        old.unlink()
    return {release: build_package("rpm", release, RPM_DIR) for release in (1, 2)}


@pytest.fixture(scope="session")
def rpm_package(rpms: dict[int, Path]) -> Path:
    return rpms[1]


@pytest.fixture(scope="module")
def machine() -> Iterator[Container]:
    ensure_host_tracefs()
    rootfs = ensure_rootfs(WORK)
    for d in (DEB_DIR, RPM_DIR):
        d.mkdir(parents=True, exist_ok=True)
    binds = [(str(DEB_DIR), "/pkgs", True), (str(RPM_DIR), "/rpms", True),
             ("/sys/kernel/tracing", "/sys/kernel/tracing", False)]
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
