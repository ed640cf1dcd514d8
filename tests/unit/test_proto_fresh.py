"""The committed admin API stubs match protos/hostagent/admin/v1/admin.proto.

Regenerates into a temp dir with grpcio-tools and compares. Lines that only name tool versions
(the gencode's version stamp and runtime check) are ignored, so a newer grpcio-tools on a
developer machine does not fail this test; any change of the API itself does.
Fix a failure with: python -m hostagent.admin.gen
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hostagent.admin import gen

pytest.importorskip("grpc_tools")
_VERSIONED = re.compile(r"^(# Protobuf Python Version:.*|GRPC_GENERATED_VERSION = .*|\s+\d+,\s*$)")


def _normalised(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not _VERSIONED.match(line)]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    fresh = gen.generate(tmp_path)
    committed_dir = gen.ROOT / "hostagent" / "admin" / "v1"
    for path in fresh:
        committed = committed_dir / path.name
        assert committed.exists(), f"{committed} is missing: run python -m hostagent.admin.gen"
        assert _normalised(committed) == _normalised(path), (
            f"{committed} is stale: run python -m hostagent.admin.gen and commit the result"
        )
