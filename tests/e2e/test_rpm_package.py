"""The .rpm for RHEL-family hosts: it cannot be installed on this Debian machine, so its metadata,
file list, scriptlets and requirements are read back with rpm itself, and it is installed into an
empty root without scriptlets (what rpm would lay on disk)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def rpmq(package: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(package)], capture_output=True, text=True,
                          check=True).stdout


def test_metadata(rpm_package: Path) -> None:
    info = rpmq(rpm_package, "--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}\n")
    name, version, release, arch, license_ = info.split()
    assert (name, release, arch, license_) == ("hostagent", "1", "x86_64", "Apache-2.0")
    assert version == __import__("hostagent").__version__


def test_requirements(rpm_package: Path) -> None:
    requires = set(rpmq(rpm_package, "--requires").splitlines())
    assert {"python3-bcc", "procps-ng", "shadow-utils", "systemd"} <= requires
    # The package asks for the oldest CPython it bundles binary wheels for.
    wheels = rpmq(rpm_package, "-l")
    tags = sorted({int(m) for m in re.findall(r"/grpcio-[^/]*-cp3(\d+)-", wheels)})
    assert tags, wheels
    assert f"python3 >= 3.{tags[0]}" in requires, requires
    # Nothing from inside the bundled wheels leaks into the requirements (they are zip files).
    assert not [r for r in requires if r.startswith(("python(abi)", "python3.", "libgrpc", "lib"))], requires
    assert rpmq(rpm_package, "--recommends").split() == ["kernel-devel"]


def test_file_list_and_config(rpm_package: Path) -> None:
    files = set(rpmq(rpm_package, "-l").splitlines())
    for expected in (
        "/usr/bin/hostagent",
        "/usr/bin/hostagentctl",
        "/usr/lib/systemd/system/hostagent.service",
        "/etc/hostagent/hostagent.toml",
        "/opt/hostagent/libexec/install-venv",
        "/usr/share/man/man8/hostagent.8.gz",
        "/usr/share/bash-completion/completions/hostagent",
    ):
        assert expected in files, expected
    wheels = [f for f in files if f.startswith("/opt/hostagent/wheels/")]
    assert any(Path(w).name.startswith("hostagent-") for w in wheels)
    for minor in (11, 12):  # Debian 12's and Ubuntu 24.04's / RHEL 10's python3
        assert any(Path(w).name.startswith("grpcio-") and f"-cp3{minor}-" in w for w in wheels), minor
    assert any(Path(w).name.startswith("pip-") for w in wheels)
    # config(noreplace): an administrator's edits survive upgrades.
    flags = rpmq(rpm_package, "--queryformat", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]")
    assert "/etc/hostagent/hostagent.toml cn" in flags.splitlines()


def test_scriptlets(rpm_package: Path) -> None:
    scripts = rpmq(rpm_package, "--scripts")
    assert "groupadd --system hostagent" in scripts.split("postinstall scriptlet")[0]  # in %pre
    post = scripts.split("postinstall scriptlet")[1].split("preuninstall scriptlet")[0]
    assert "/opt/hostagent/libexec/install-venv" in post
    assert "systemctl --no-reload preset hostagent.service" in post
    preun = scripts.split("preuninstall scriptlet")[1].split("postuninstall scriptlet")[0]
    assert "disable --now hostagent.service" in preun
    assert "try-restart" not in scripts  # upgrades stop in %pre and start in %posttrans instead
    assert "systemctl start hostagent.service" in scripts.split("posttrans scriptlet")[1]


def test_installs_into_an_empty_root(rpm_package: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    done = subprocess.run(
        ["rpm", "-i", "--root", str(root), "--nodeps", "--noscripts", "--dbpath", "/var/lib/rpm",
         str(rpm_package)],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (root / "usr/lib/systemd/system/hostagent.service").read_text().startswith("# hostagent")
    assert (root / "etc/hostagent/hostagent.toml").stat().st_mode & 0o777 == 0o644
    assert (root / "opt/hostagent/libexec/install-venv").stat().st_mode & 0o111
    installed = subprocess.run(["rpm", "-q", "--root", str(root), "--dbpath", "/var/lib/rpm", "hostagent"],
                               capture_output=True, text=True, check=True).stdout
    assert installed.startswith("hostagent-")
