"""Whether the compiled hot path is used: decided once, when the ``hostagent`` package is imported.

setup.py can compile the per-span stages with mypyc (``make compile``; the packages ship such a
wheel for the CPython they were built with, and a pure one for every other). A compiled module is
an extension file beside its source (``http1.cpython-311-x86_64-linux-gnu.so`` next to
``http1.py``), and Python's import system prefers the extension. That is wrong in three cases, in
which every compiled module is imported from its source instead (all or none: compiled modules
call each other directly, so a mix would run old code):

- ``HOSTAGENT_PURE=1`` (debugging, and the bench's A/B of compiled against pure);
- in a source checkout, a compiled module older than its source (edited since ``make compile``:
  running the old code would be a silent lie);
- the compiled library does not load here (built for another glibc or CPython).

``STATE`` says which, for the daemon's start-up log.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Optional

PACKAGE_DIR = Path(__file__).resolve().parent
SHARED_LIBRARY = "hostagent._hot__mypyc"  # setup.py: group_name "hostagent._hot"

STATE = "pure Python (not compiled)"
COMPILED_MODULES: dict[str, Path] = {}  # module name -> its source file


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    return ".".join(rel.parts)


def find_compiled(package_dir: Path = PACKAGE_DIR) -> dict[str, tuple[Path, Path]]:
    """module name -> (extension file, source file), for each extension that has a source beside it."""
    out: dict[str, tuple[Path, Path]] = {}
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    # One walk (this runs at every import of hostagent); on Linux every extension suffix ends in .so
    for ext in package_dir.rglob("*.so"):
        for suffix in suffixes:
            if ext.name.endswith(suffix):
                source = ext.with_name(ext.name[: -len(suffix)] + ".py")
                if source.exists():
                    out[_module_name(source, package_dir)] = (ext, source)
                    break
    return out


class SourceFirst:
    """A meta-path finder that imports the named modules from their source files."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> Optional[importlib.machinery.ModuleSpec]:
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def decide(environ: Any = os.environ, package_dir: Path = PACKAGE_DIR,
           shared_library: str = SHARED_LIBRARY) -> tuple[bool, str, dict[str, Path]]:
    """(use the compiled modules, why, module -> source) for this package directory."""
    found = find_compiled(package_dir)
    sources = {name: src for name, (_, src) in found.items()}
    if not found:
        return False, "pure Python (not compiled)", sources
    if environ.get("HOSTAGENT_PURE") == "1":
        return False, f"pure Python (HOSTAGENT_PURE=1; {len(found)} compiled modules not used)", sources
    if (package_dir.parent / "setup.py").exists():  # a checkout: sources may have been edited
        # The code lives in the shared library (hostagent/_hot__mypyc.*.so); each module's own
        # extension is a shim that a rebuild leaves untouched when nothing about it changed.
        shared = [p for p in package_dir.glob(SHARED_LIBRARY.rsplit(".", 1)[1] + ".*") if p.suffix == ".so"]
        built = max((p.stat().st_mtime for p in shared), default=0.0)
        stale = sorted(str(src.relative_to(package_dir.parent)) for ext, src in found.values()
                       if src.stat().st_mtime > max(ext.stat().st_mtime, built))
        if stale:
            return False, (f"pure Python: {len(stale)} compiled modules are older than their source "
                           f"({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}); run `make compile`"), sources
    try:
        importlib.import_module(shared_library)
    except ImportError as exc:
        return False, f"pure Python: the compiled modules do not load here ({exc})", sources
    return True, f"compiled (mypyc): {len(found)} modules", sources


def choose() -> None:
    """Called once from hostagent/__init__.py, before any compiled module can be imported."""
    global STATE
    use, STATE, sources = decide()
    COMPILED_MODULES.update(sources if use else {})
    if not use and sources:
        sys.meta_path.insert(0, SourceFirst(sources))
