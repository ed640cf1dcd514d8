"""Small questions to the machine's systemd about the hostagent unit, shared by the e2e modules."""

from __future__ import annotations

from tests.e2e.nspawn import Container, wait_for

UNIT = "hostagent.service"
DROPIN_DIR = "/etc/systemd/system/hostagent.service.d"


def prop(box: Container, name: str) -> str:
    return box.run(["systemctl", "show", "-p", name, "--value", UNIT]).stdout.strip()


def main_pid(box: Container) -> int:
    return int(prop(box, "MainPID"))


def is_active(box: Container) -> str:
    return box.run(["systemctl", "is-active", UNIT], check=False).stdout.strip()


def journal(box: Container) -> str:
    return box.run(["journalctl", "-u", UNIT, "--no-pager", "-o", "cat"], check=False).stdout


def export_to(box: Container, port: int) -> None:
    """A drop-in that points the agent at the host's OTLP receiver, as a config tool would."""
    box.write(f"{DROPIN_DIR}/10-e2e-export.conf",
              f"[Service]\nEnvironment=OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port}\n")


def wait_active_with_new_pid(box: Container, old_pid: int, timeout: float = 120.0) -> int:
    def ready() -> int:
        pid = main_pid(box)
        return pid if is_active(box) == "active" and pid not in (0, old_pid) else 0

    pid = wait_for(ready, timeout, f"{UNIT} active again with a new main PID", on_fail=lambda: journal(box)[-3000:])
    assert isinstance(pid, int)
    return pid
