"""pyproject.toml lists every package by hand (control/ installs as hostagentctl): keep it complete."""

from __future__ import annotations

from pathlib import Path

import tomli

REPO = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed() -> None:
    listed = set(tomli.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "hostagent").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert "hostagentctl" in listed


def test_cli_entry_points_name_importable_modules() -> None:
    scripts = tomli.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"hostagent": "hostagent.__main__:main", "hostagentctl": "hostagentctl.__main__:main"}
