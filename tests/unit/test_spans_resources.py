"""Default per-process Resources and the clock conversion used by SpanBuilder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import hostagent
from hostagent.model import Call, Connection, Role
from hostagent.traces.clock import MonotonicToUnix, measure_offset_ns
from hostagent.traces.resources import HostInfo, ProcessResources


def call_from(pid: int, comm: str = "") -> Call:
    return Call(
        protocol="http",
        role=Role.SERVER,
        start_ns=0,
        end_ns=1,
        name="GET",
        conn=Connection(pid=pid, tid=pid, fd=3, comm=comm),
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A fixture tree standing in for / (machine-id and /proc/PID/comm)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    for pid, comm in ((42, "nginx"), (43, "postgres")):
        (tmp_path / f"proc/{pid}").mkdir(parents=True)
        (tmp_path / f"proc/{pid}/comm").write_text(comm + "\n")
    return tmp_path


def test_resource_attributes_exact(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent's own OTEL_* environment must not leak into a traced process's identity.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "the-agent")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=agent")
    resources = ProcessResources(str(root), host=HostInfo(str(root), hostname="box1"))
    resource = resources(call_from(42, comm="nginx"))
    assert dict(resource.attributes) == {
        "service.name": "nginx",
        "process.pid": 42,
        "process.executable.name": "nginx",
        "host.name": "box1",
        "host.id": "0123456789abcdef0123456789abcdef",
        "os.type": "linux",
        "telemetry.sdk.name": "hostagent",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": hostagent.__version__,
    }


def test_comm_read_from_proc_when_missing(root: Path) -> None:
    resources = ProcessResources(str(root), host=HostInfo(str(root), hostname="box1"))
    assert resources(call_from(43)).attributes["service.name"] == "postgres"


def test_unknown_process(root: Path) -> None:
    resources = ProcessResources(str(root), host=HostInfo(str(root), hostname="box1"))
    for c in (call_from(999), Call(protocol="dns", role=Role.CLIENT, start_ns=0, end_ns=1, name="x")):
        attrs = resources(c).attributes
        assert attrs["service.name"] == "unknown_service"
        assert "process.executable.name" not in attrs


def test_cached_per_pid_and_bounded(root: Path) -> None:
    resources = ProcessResources(str(root), max_entries=2, host=HostInfo(str(root), hostname="h"))
    first = resources(call_from(42))
    assert resources(call_from(42)) is first
    (root / "proc/42/comm").write_text("renamed\n")
    assert resources(call_from(42)).attributes["service.name"] == "nginx"  # cached, no /proc read
    resources(call_from(43))
    resources(call_from(44, comm="third"))  # evicts the oldest (42)
    assert resources(call_from(42)).attributes["service.name"] == "renamed"
    resources.forget(42)
    assert resources(call_from(42)) is not first


def test_missing_machine_id_omits_host_id(tmp_path: Path) -> None:
    assert "host.id" not in HostInfo(str(tmp_path), hostname="h").attributes()


def test_clock_offset_matches_the_system() -> None:
    offset = measure_offset_ns()
    direct = time.time_ns() - time.monotonic_ns()
    assert abs(offset - direct) < 1_000_000  # within 1 ms (the direct read is the sloppy one)
    clock = MonotonicToUnix()
    mono = time.monotonic_ns()
    assert abs(clock.to_unix(mono) - time.time_ns()) < 5_000_000


def test_clock_fixed_offset_and_refresh() -> None:
    clock = MonotonicToUnix(offset_ns=10)
    assert clock.to_unix(5) == 15
    new = clock.refresh()
    assert clock.offset_ns == new and abs(new - (time.time_ns() - time.monotonic_ns())) < 1_000_000


def test_frozen_resource_hashes_and_compares_like_resource() -> None:
    from opentelemetry.sdk.resources import Resource

    from hostagent.traces.resources import FrozenResource

    attrs = {"service.name": "a", "process.pid": 1}
    frozen, plain = FrozenResource(attrs), Resource(attrs)
    assert hash(frozen) == hash(plain) and frozen == plain and plain == frozen
    assert frozen != FrozenResource({"service.name": "b"})
    assert {frozen: 1}[plain] == 1  # the encoder's grouping dict treats them as one Resource
