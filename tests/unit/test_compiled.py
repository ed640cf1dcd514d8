"""hostagent.compiled: the compiled hot path is used only when it is current and loads."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostagent.compiled import PACKAGE_DIR, SourceFirst, decide, find_compiled

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
REPO = PACKAGE_DIR.parent


def checkout(tmp_path: Path, *, ext_age_s: float) -> Path:
    """tmp/setup.py + tmp/hostagent/protocols/x.py and a (bogus) extension ``ext_age_s`` older."""
    (tmp_path / "setup.py").write_text("")
    pkg = tmp_path / "hostagent" / "protocols"
    pkg.mkdir(parents=True)
    src = pkg / "x.py"
    src.write_text("WHERE = 'source'\n")
    ext = pkg / f"x{SUFFIX}"
    ext.write_bytes(b"not an ELF file")
    now = src.stat().st_mtime
    os.utime(ext, (now - ext_age_s, now - ext_age_s))
    (pkg / f"orphan{SUFFIX}").write_bytes(b"")  # no source beside it: not a compiled module of ours
    return tmp_path / "hostagent"


def test_nothing_compiled_is_pure(tmp_path: Path) -> None:
    (tmp_path / "hostagent").mkdir()
    assert decide({}, tmp_path / "hostagent")[:2] == (False, "pure Python (not compiled)")


def test_finds_extensions_with_their_sources_only(tmp_path: Path) -> None:
    pkg = checkout(tmp_path, ext_age_s=0)
    assert {k: v[1].name for k, v in find_compiled(pkg).items()} == {"hostagent.protocols.x": "x.py"}


def test_an_edited_source_turns_every_compiled_module_off(tmp_path: Path) -> None:
    use, why, sources = decide({}, checkout(tmp_path, ext_age_s=10), "json")
    assert not use
    assert why == ("pure Python: 1 compiled modules are older than their source (hostagent/protocols/x.py); "
                   "run `make compile`")
    assert list(sources) == ["hostagent.protocols.x"]


def test_pure_on_request_and_when_the_library_does_not_load(tmp_path: Path) -> None:
    pkg = checkout(tmp_path, ext_age_s=-10)  # newer than its source: current
    assert decide({"HOSTAGENT_PURE": "1"}, pkg, "json")[:2] == (
        False, "pure Python (HOSTAGENT_PURE=1; 1 compiled modules not used)")
    use, why, _ = decide({}, pkg, "hostagent._no_such_library")
    assert not use and why.startswith("pure Python: the compiled modules do not load here (No module named")
    assert decide({}, pkg, "json")[:2] == (True, "compiled (mypyc): 1 modules")


def test_source_first_imports_the_source_beside_an_extension(tmp_path: Path) -> None:
    pkg = checkout(tmp_path, ext_age_s=10)
    finder = SourceFirst({"hostagent_fixture_x": pkg / "protocols" / "x.py"})
    spec = finder.find_spec("hostagent_fixture_x")
    assert spec is not None and spec.origin == str(pkg / "protocols" / "x.py")
    assert finder.find_spec("json") is None


@pytest.mark.skipif(not find_compiled(), reason="no compiled modules in this checkout (make compile)")
def test_this_checkout_uses_them_unless_told_not_to() -> None:
    code = "import hostagent.compiled as c, hostagent.protocols.http1 as m; print(c.STATE); print(m.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "HOSTAGENT_PURE"}
    state, where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  cwd=REPO, env=env).stdout.splitlines()
    if state.startswith("pure Python: ") and "older than their source" in state:
        pytest.skip(state)  # edited since make compile: the fallback is what this checkout runs
    assert state.startswith("compiled (mypyc): ") and where.endswith(SUFFIX), (state, where)
    state, where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  cwd=REPO, env={**env, "HOSTAGENT_PURE": "1"}).stdout.splitlines()
    assert state.startswith("pure Python (HOSTAGENT_PURE=1") and where.endswith("http1.py"), (state, where)


def test_a_rebuilt_shared_library_makes_old_module_shims_current(tmp_path: Path) -> None:
    # mypyc puts the code in hostagent/_hot__mypyc.*.so; a rebuild leaves a module's own shim
    # untouched when nothing about the module's interface changed
    pkg = checkout(tmp_path, ext_age_s=10)
    source_time = (pkg / "protocols" / "x.py").stat().st_mtime
    shared = pkg / f"_hot__mypyc{SUFFIX}"
    shared.write_bytes(b"")
    os.utime(shared, (source_time + 10, source_time + 10))
    assert decide({}, pkg, "json")[:2] == (True, "compiled (mypyc): 1 modules")
    os.utime(shared, (source_time - 10, source_time - 10))
    assert decide({}, pkg, "json")[0] is False
