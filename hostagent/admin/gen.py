"""Regenerate the admin API's Python stubs from protos/ (the `make proto` step).

    python -m hostagent.admin.gen            # writes hostagent/admin/v1/admin_pb2*.py(i)
    python -m hostagent.admin.gen --out DIR  # writes DIR/hostagent/admin/v1/... (used by the
                                             # staleness test, which compares with the committed ones)

The stubs are committed so that an installed agent needs no grpcio-tools; the unit test
tests/unit/test_proto_fresh.py fails when they no longer match the .proto.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
PROTO = "hostagent/admin/v1/admin.proto"
GENERATED = ("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) into ``out``; returns the generated files."""
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_DIR / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    target = out / Path(PROTO).parent
    return [target / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the checkout)")
    ns = parser.parse_args(argv)
    for path in generate(ns.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
