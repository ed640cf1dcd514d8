"""What bpf/capture.c compiles whole for the data path the socket group will take (DATA_PATH), and
what start-up's compile must not pay for (bcc's kernel-symbol check at every bpf_probe_read_user)."""

from __future__ import annotations

import re

import pytest

from hostagent.probes import data_path
from hostagent.probes import loader as loader_mod
from hostagent.probes.loader import _WALKERS, BpfCapture
from hostagent.probes.registry import DATA_PROGRAMS, SOCKET_DATA, SYSCALL_DATA
from hostagent.probes.sources import bpf_dir

SOURCE = (bpf_dir() / "capture.c").read_text()
WALKERS = {name.decode(): raw for name, raw, _ in _WALKERS}


def _programs(path: str) -> set[str]:
    walkers = {name for name, raw in WALKERS.items() if raw == (path == SOCKET_DATA)}
    return {fn for _, fn in DATA_PROGRAMS[path]} | walkers


def _gate(fn: str) -> str:
    """The macro the program's first statement returns on ("" when it has none)."""
    m = re.search(r"^int " + fn + r"\([^)]*\) \{\n    if \(!(\w+)\)\n        return 0;", SOURCE, re.M)
    return m.group(1) if m else ""


def test_each_paths_own_programs_compile_empty_for_the_other() -> None:
    socket, syscalls = _programs(SOCKET_DATA), _programs(SYSCALL_DATA)
    assert {fn: _gate(fn) for fn in socket - syscalls} == dict.fromkeys(socket - syscalls, "SOCKET_PROGRAMS")
    assert {fn: _gate(fn) for fn in syscalls - socket} == dict.fromkeys(syscalls - socket, "SYSCALL_PROGRAMS")
    assert {fn: _gate(fn) for fn in socket & syscalls} == dict.fromkeys(socket & syscalls, "")
    # the mmsg exits of the socket path are a program of their own, not the syscall path's exit
    assert ("syscalls:sys_exit_recvmmsg", "sock__exit_mmsg") in DATA_PROGRAMS[SOCKET_DATA]
    assert ("syscalls:sys_exit_recvmmsg", "sock__exit_data") in DATA_PROGRAMS[SYSCALL_DATA]


def test_no_call_by_the_helpers_name() -> None:
    """bcc rebuilds a table of all kernel symbols at each call it sees by this name (~0.15 s each
    on a VM with 121k symbols): the file calls it under its own name."""
    code = re.sub(r"/\*.*?\*/", "", SOURCE, flags=re.S)
    assert "bpf_probe_read_user(" not in code
    assert "read_user(" in code


@pytest.mark.parametrize(
    ("hooks", "exists", "bits"),
    [
        ("auto", True, 1),  # the socket layer's programs only; the others if they fail (recompile)
        ("socket", True, 1),
        ("syscalls", True, 2),
        ("auto", False, 2),  # a kernel before 6.3: the syscall tracepoints
        ("socket", False, 3),  # refused at attach with the reason, as before: compile both
    ],
)
def test_the_compile_follows_the_planned_path(monkeypatch: pytest.MonkeyPatch, hooks: str, exists: bool,
                                              bits: int) -> None:
    real = data_path.choose
    monkeypatch.setattr(data_path, "choose", lambda mode: real(mode, "x86_64", lambda name: exists))
    cap = BpfCapture(on_event=lambda e: None, data_hooks=hooks)
    assert cap._plan_data_path() == bits
    cap.data_path = SYSCALL_DATA  # the path taken, once taken, wins
    assert cap._plan_data_path() == 2


def test_walkers_by_path() -> None:
    cap = BpfCapture(on_event=lambda e: None)
    cap.data_path = SOCKET_DATA
    assert {n.decode() for n, _, _ in cap._walkers()} == {"sock__h2_walk_raw", "sock__tail_raw"}
    cap.data_path = SYSCALL_DATA
    assert {n.decode() for n, _, _ in cap._walkers()} == {"sock__h2_walk_tp"}


def test_no_recompile_once_the_ring_was_read() -> None:
    """After the first poll the maps hold what the agent learnt and the ring is another thread's:
    the syscall path's programs, not compiled at start, are refused with what to do instead."""
    cap = BpfCapture(on_event=lambda e: None)
    cap._compiled_paths = loader_mod._PATH_BITS[SOCKET_DATA]
    cap.data_path = SYSCALL_DATA
    cap._polled = True
    refused = cap._recompile()
    assert refused is not None and refused.state == "failed"
    assert refused.reason == ('the syscalls data programs were not compiled at start (the socket layer\'s were '
                              'planned); restart with [probes] data_hooks = "syscalls"')
