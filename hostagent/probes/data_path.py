"""Which hooks the socket group takes bytes from ([probes] data_hooks; see registry.DATA_PROGRAMS).

The socket-layer tracepoints run one program per socket call and none for file or pipe I/O, but
they exist only from kernel 6.3 and the program reads the syscall's arguments from x86-64 user
registers; anywhere else the syscall tracepoints (one sys_enter/sys_exit pair per data syscall)
capture the same bytes.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

from hostagent.kernel.readiness import TRACEFS
from hostagent.probes.registry import SOCKET_DATA, SOCKET_DATA_REQUIRED, SYSCALL_DATA


def tracepoint_exists(name: str, tracefs: Path = TRACEFS) -> bool:
    """Whether the kernel has a tracepoint of this name in any category (tracefs events/*/name)."""
    return any((tracefs / "events").glob(f"*/{name}/format"))


def choose(mode: str, machine: str | None = None,
           exists: Callable[[str], bool] = tracepoint_exists) -> tuple[str, str]:
    """(SOCKET_DATA or SYSCALL_DATA, why) for a [probes] data_hooks value ("auto", "socket",
    "syscalls"). "socket" where the kernel cannot is refused with the reason (ValueError)."""
    if mode == SYSCALL_DATA:
        return SYSCALL_DATA, "data_hooks = \"syscalls\""
    machine = machine or platform.machine()
    why_not = ""
    if machine != "x86_64":
        why_not = f"the socket-layer programs read x86-64 syscall registers; this machine is {machine}"
    else:
        missing = [n for n in SOCKET_DATA_REQUIRED if not exists(n)]
        if missing:
            why_not = f"this kernel has no {' / '.join(missing)} tracepoint (added in Linux 6.3)"
    if not why_not:
        return SOCKET_DATA, "the kernel's sock_send_length / sock_recv_length tracepoints"
    if mode == SOCKET_DATA:
        raise ValueError(f"data_hooks = \"socket\" cannot be served: {why_not}")
    return SYSCALL_DATA, f"syscall tracepoints ({why_not})"
