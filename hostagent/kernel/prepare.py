"""Everything the kernel must offer before bcc can compile: tracefs, headers, a usable bpf().

Kept light (no exporter or gRPC imports) so that the daemon can run it, and start the compile
that follows, before it imports the heavy parts of the pipeline.
"""

from __future__ import annotations

import platform
from pathlib import Path

from hostagent.config import Config
from hostagent.kernel.headers import find_kernel_headers
from hostagent.kernel.readiness import check_bpf_usable, ensure_tracefs


def prepare_kernel(config: Config) -> dict[str, str]:
    """tracefs, kernel headers for bcc, bpf() usable -- or KernelNotReady with one sentence."""
    ensure_tracefs()
    choice = find_kernel_headers(config.agent.kernel_headers or None, Path(config.agent.runtime_dir))
    check_bpf_usable(headers_found=True)
    return {"kernel": platform.release(), "headers": f"{choice.path} ({choice.source} {choice.version})"}
