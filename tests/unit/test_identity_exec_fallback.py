"""A process gone before its exec event is handled is still named by its program, from what the
kernel event carried (comm, the execve file name), and config rules on ``exe`` still apply."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hostagent.identity.naming import parse_service_rules
from hostagent.identity.procfs import ProcFS
from hostagent.identity.resource import INSTANCE_NAMESPACE, HostInfo
from hostagent.identity.service import ServiceCache

HOST = HostInfo(name="fixture-host", id="0123456789abcdef0123456789abcdef", arch="amd64")
GONE = 4242  # no proc/4242 in the (empty) tree: exited before the exec event was handled


def cache_over_empty_tree(tmp_path: Path, rules: list[dict[str, str]] | None = None) -> ServiceCache:
    (tmp_path / "proc").mkdir()
    return ServiceCache(ProcFS(str(tmp_path), clock_ticks=100), host_info=HOST,
                        rules=parse_service_rules(rules or [], "t.toml"))  # fmt: skip


@pytest.mark.parametrize(
    ("comm", "exe", "name", "path"),
    [
        ("curl", "/usr/bin/curl", "curl", "/usr/bin/curl"),  # sh -c 'exec curl ...' (PATH lookup)
        ("curl", "curl", "curl", None),  # relative name: not an executable path
        ("gunicorn", "/srv/venv/bin/gunicorn", "gunicorn", "/srv/venv/bin/gunicorn"),
        ("sleep", "", "sleep", None),  # no file name captured: comm alone
    ],
)
def test_gone_at_exec_named_from_the_event(tmp_path: Path, comm: str, exe: str, name: str,
                                           path: str | None) -> None:  # fmt: skip
    cache = cache_over_empty_tree(tmp_path)
    service = cache.on_exec(GONE, comm, exe=exe)
    assert service is not None
    assert (service.name, service.decided_by) == (name, "executable")
    attrs = service.attributes_dict()
    assert attrs["process.pid"] == GONE
    assert attrs.get("process.executable.path") == path
    assert attrs["process.executable.name"] == name
    assert attrs["service.instance.id"] == str(uuid.uuid5(INSTANCE_NAMESPACE, f"{HOST.id}:{GONE}:0"))
    # nothing the event does not carry is made up
    for key in ("process.parent_pid", "process.command_args", "process.owner", "process.creation.time"):
        assert key not in attrs
    # the call that follows the exit (the pipeline's lookup) gets it, not unknown_service
    cache.on_exit(GONE)
    assert cache.service_for(GONE, comm).name == name
    assert len(cache) == 0  # never a live entry: a new process with this pid is read afresh


def test_config_rule_on_exe_applies(tmp_path: Path) -> None:
    cache = cache_over_empty_tree(tmp_path, [{"name": "fetcher", "namespace": "ops", "exe": "/usr/bin/curl"}])
    service = cache.on_exec(GONE, "curl", exe="/usr/bin/curl")
    assert service is not None
    assert (service.name, service.namespace, service.decided_by) == ("fetcher", "ops", "config")
    assert service.attributes_dict()["service.namespace"] == "ops"


def test_nothing_known_stays_unknown(tmp_path: Path) -> None:
    cache = cache_over_empty_tree(tmp_path)
    assert cache.on_exec(GONE) is None
    assert cache.service_for(GONE, "").name == "unknown_service"
