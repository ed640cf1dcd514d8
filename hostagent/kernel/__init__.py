"""hostagent.kernel: is this kernel ready for our BPF programs, and with which headers.

Each step logs what it found or did, so that an operator reading the journal can tell why the
agent runs (or refuses to) on this host.
"""

from hostagent.kernel.errors import KernelNotReady
from hostagent.kernel.headers import HeadersChoice, find_kernel_headers
from hostagent.kernel.readiness import check_bpf_usable, ensure_tracefs

__all__ = ["HeadersChoice", "KernelNotReady", "check_bpf_usable", "ensure_tracefs", "find_kernel_headers"]
