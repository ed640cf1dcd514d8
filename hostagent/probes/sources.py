"""Where the BPF C sources are: a checkout, an installed package, or an override."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_MARKER = "events.h"


def bpf_dir() -> Path:
    """HOSTAGENT_BPF_DIR, else the checkout's bpf/ next to the package, else
    <sys.prefix>/share/hostagent/bpf (where pyproject's data-files installs them)."""
    env = os.environ.get("HOSTAGENT_BPF_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "bpf")
    candidates.append(Path(sys.prefix) / "share" / "hostagent" / "bpf")
    for cand in candidates:
        if (cand / _MARKER).is_file():
            return cand
    raise FileNotFoundError("hostagent BPF sources not found in " + ", ".join(str(p) for p in candidates))


def read_source(name: str = "capture.c") -> str:
    return (bpf_dir() / name).read_text()
