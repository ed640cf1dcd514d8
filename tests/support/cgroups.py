"""Cgroup directories a test makes by hand (a unit's or a container's stand-in) and removes after."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def cgroup_dirs(*directories: Path) -> Iterator[None]:
    """Make the directories that do not exist yet, parents first; afterwards remove only those made
    (another test may own the others). rmdir fails while a (dying) member is still listed: retried."""
    made: list[Path] = []
    try:
        for directory in directories:
            if not directory.exists():
                directory.mkdir()
                made.append(directory)
        yield
    finally:
        for directory in reversed(made):
            for _ in range(50):
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
