"""Who may use the admin socket: the kernel's file permissions, then the uid from SO_PEERCRED.

The CLI runs as other users with runuser (the tests run as root, as in CI)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .admin_harness import cli, running, world_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser")


@pytest.fixture
def base_dir():
    with world_dir() as d:
        yield d


def test_user_outside_the_group_is_refused_by_the_socket(base_dir: Path) -> None:
    # The group does not exist here: the socket is root:root 0660, root only.
    with running(base_dir, group="hostagent-no-such-group") as h:
        out = cli("--socket", str(h.socket), "probes", "disable", "http", user="nobody")
        assert out.returncode == 1
        assert out.stderr.strip() == (
            f"hostagentctl: permission denied on {h.socket}: only root and members of the 'hostagent' "
            "group may use the admin API (try sudo, or add yourself to that group)"
        )
        assert h.holder.current.probes == {"http", "dns"}
        assert h.audit() == []  # it never reached the API


def test_group_member_may_change_and_is_audited_by_uid(base_dir: Path) -> None:
    # nobody's primary group is nogroup: making it the admin group lets nobody in.
    with running(base_dir, group="nogroup") as h:
        assert h.socket.stat().st_gid == 65534
        out = cli("--socket", str(h.socket), "probes", "enable", "redis", "-o", "json", user="nobody")
        assert out.returncode == 0, out.stderr
        assert h.holder.current.probes == {"http", "dns", "redis"}
        (line,) = h.audit()
        assert line["who"].startswith("uid=65534(nobody) pid=")
        assert line["action"] == "probes.enable" and line["old"] == ["dns", "http"]
        # a user outside nogroup (daemon: uid 1, gid 1) cannot even connect
        out = cli("--socket", str(h.socket), "status", user="daemon")
        assert out.returncode == 1 and "permission denied" in out.stderr


def test_loosened_socket_still_protects_changes(base_dir: Path) -> None:
    # An operator made the socket world-writable: reading works, changing is still refused.
    with running(base_dir, group="hostagent-no-such-group", socket_mode=0o666) as h:
        out = cli("--socket", str(h.socket), "probes", "list", "-o", "json", user="nobody")
        assert out.returncode == 0, out.stderr
        assert [p["name"] for p in json.loads(out.stdout)["probes"] if p["enabled"]] == ["http", "dns"]
        out = cli("--socket", str(h.socket), "sampling", "set", "0", user="nobody")
        assert out.returncode == 1
        assert out.stderr.startswith("hostagentctl: permission denied: uid=65534(nobody) pid=")
        assert "only root and members of group 'hostagent-no-such-group' may" in out.stderr
        assert h.holder.current.sampling.ratio == 1.0
        (line,) = h.audit()
        assert (line["action"], line["ok"], line["error"]) == ("sampling.set", False, "permission denied")
