"""The .rpm's scriptlets against a real systemd: install (group, venv, preset), start, upgrade from
release 1 to 2 (stop in %pre, start in %posttrans, config(noreplace) keeps an edit), erase.

The machine is Debian, so rpm's database knows none of the requirements (python3, python3-bcc are
Debian packages here): every rpm call uses --nodeps. What runs is the real scriptlets, the real
install-venv, and the agent as the unit, sandbox included.

This machine boots without the host's tracefs bound in: the unit's privileged ExecStartPre must
mount it (in PID 1's namespace) for the sandboxed agent, which may not mount anything itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import OTLP_PORT
from tests.e2e.nspawn import Container
from tests.e2e.unitctl import UNIT, export_to, is_active, journal, main_pid, prop, wait_active_with_new_pid
from tests.support.otlp_receiver import OtlpGrpcReceiver

BIND_TRACEFS = False

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # the first test also debootstraps (~5 min on a fresh machine)


@pytest.fixture(scope="module")
def rpm_machine(machine: Container, rpms: dict[int, Path], receiver: OtlpGrpcReceiver) -> Iterator[Container]:
    export_to(machine, OTLP_PORT)
    machine.run(["rpm", "-i", "--nodeps", f"/pkgs/{rpms[1].name}"], timeout=300)
    yield machine


def rpm_version(box: Container) -> str:
    return box.run(["rpm", "-q", "--qf", "%{VERSION}-%{RELEASE}", "hostagent"]).stdout


def test_install_creates_group_builds_venv_and_presets(rpm_machine: Container) -> None:
    box = rpm_machine
    assert box.run(["getent", "group", "hostagent"]).stdout.startswith("hostagent:x:")
    assert box.run(["/opt/hostagent/venv/bin/python", "-c", "import bcc, hostagent"]).returncode == 0
    # %systemd_post applies the preset and does not start; Debian's preset policy is "enable".
    assert box.run(["systemctl", "is-enabled", UNIT], check=False).stdout.strip() == "enabled"
    assert is_active(box) == "inactive"


def test_starts_under_systemd_mounting_tracefs(rpm_machine: Container) -> None:
    box = rpm_machine
    assert box.run(["findmnt", "-t", "tracefs"], check=False).stdout == ""
    box.run(["systemctl", "start", UNIT], timeout=200)
    assert box.run(["findmnt", "-n", "-o", "TARGET", "-t", "tracefs"]).stdout.split() == ["/sys/kernel/tracing"]
    assert is_active(box) == "active"
    assert prop(box, "StatusText").endswith(f"exporting to http://127.0.0.1:{OTLP_PORT} (grpc), 0 dropped")
    owner = box.run(["rpm", "-qf", "--qf", "%{NAME}", "/usr/lib/systemd/system/hostagent.service"]).stdout
    assert owner == "hostagent"


def test_upgrade_restarts_and_keeps_config(rpm_machine: Container, rpms: dict[int, Path]) -> None:
    box = rpm_machine
    box.run(["sed", "-i", 's/^log_level = "info"/log_level = "debug"/', "/etc/hostagent/hostagent.toml"])
    pid = main_pid(box)
    box.run(["rpm", "-U", "--nodeps", f"/pkgs/{rpms[2].name}"], timeout=300)
    assert rpm_version(box).endswith("-2")
    wait_active_with_new_pid(box, pid)
    assert 'log_level = "debug"' in box.run(["cat", "/etc/hostagent/hostagent.toml"]).stdout
    assert box.run(["test", "-e", "/etc/hostagent/hostagent.toml.rpmnew"], check=False).returncode == 1
    assert box.run(["test", "-e", "/var/lib/rpm-state/hostagent/restart"], check=False).returncode == 1
    # The old agent was stopped cleanly by %pre, not killed.
    assert journal(box).count("stopped; dropped:") == 1


def test_erase_stops_disables_and_keeps_state(rpm_machine: Container) -> None:
    box = rpm_machine
    box.run(["rpm", "-e", "--nodeps", "hostagent"], timeout=120)
    assert is_active(box) in ("inactive", "unknown")
    assert box.run(["systemctl", "is-enabled", UNIT], check=False).returncode != 0
    assert box.run(["test", "-e", "/opt/hostagent/venv"], check=False).returncode == 1
    assert box.run(["test", "-d", "/var/lib/hostagent"], check=False).returncode == 0  # rpm has no purge
