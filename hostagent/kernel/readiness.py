"""Checks that make a refusal to start say exactly why, in one sentence."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import subprocess
from pathlib import Path

from hostagent.kernel.btf import VMLINUX
from hostagent.kernel.errors import KernelNotReady

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
_BPF_PROG_LOAD = 5
_SYS_BPF = {"x86_64": 321, "aarch64": 280}


def ensure_tracefs(mountpoint: Path = TRACEFS) -> bool:
    """Mount tracefs when it is missing (bcc reads tracepoint formats from it).

    Returns True when this call mounted it.
    """
    if (mountpoint / "events").is_dir():
        log.debug("tracefs already mounted at %s", mountpoint)
        return False
    log.info("tracefs is not mounted; mounting it at %s", mountpoint)
    res = subprocess.run(
        ["mount", "-t", "tracefs", "tracefs", str(mountpoint)], capture_output=True, text=True, check=False
    )
    if res.returncode != 0 or not (mountpoint / "events").is_dir():
        raise KernelNotReady(f"tracefs is not mounted at {mountpoint} and mounting it failed: {res.stderr.strip()}.")
    log.info("mounted tracefs at %s", mountpoint)
    return True


def _bpf_syscall_refused() -> int:
    """0 when bpf() is callable, else the errno. Probes with an empty PROG_LOAD: EINVAL/E2BIG mean
    the syscall itself is allowed (it got as far as checking our attributes)."""
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        return 0  # unknown arch: let bcc find out
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(128)
    res = libc.syscall(nr, _BPF_PROG_LOAD, attr, len(attr))
    err = ctypes.get_errno()
    if res >= 0:
        os.close(res)
        return 0
    return err if err in (errno.EPERM, errno.EACCES, errno.ENOSYS) else 0


def check_bpf_usable(headers_found: bool, btf: Path = VMLINUX) -> None:
    """Raise KernelNotReady unless we are root, bpf() works, and bcc has BTF or headers."""
    if os.geteuid() != 0:
        raise KernelNotReady("hostagent must run as root to load eBPF programs.")
    err = _bpf_syscall_refused()
    if err:
        raise KernelNotReady(f"The kernel refused the bpf() system call ({errno.errorcode.get(err, err)}).")
    has_btf = btf.exists()
    if not has_btf and not headers_found:
        raise KernelNotReady("The kernel has no BTF (/sys/kernel/btf/vmlinux) and no kernel headers were found.")
    log.info(
        "bpf() usable; BTF %s; headers %s",
        "present" if has_btf else "absent",
        "found" if headers_found else "absent",
    )
