"""Regenerate the committed protobuf / gRPC modules from boltpipe.proto.

    python -m proto.regenerate          # rewrite proto/boltpipe_pb2*.py(i)
    python -m proto.regenerate --check  # exit 1 if the committed files are stale

Needs grpcio-tools (the `test` extra pins the version so output is reproducible).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("boltpipe_pb2.py", "boltpipe_pb2.pyi", "boltpipe_pb2_grpc.py")


def generate_into(out_dir: Path) -> None:
    """Run protoc (from grpcio-tools) with the repository root as include path,
    so the gRPC module imports `from proto import boltpipe_pb2`."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("grpcio-tools is not installed: pip install -e '.[test]'") from exc
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(REPO_ROOT / "proto" / "boltpipe.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on proto/boltpipe.proto")


def stale_files() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate_into(Path(tmp))
        fresh = Path(tmp) / "proto"
        return [
            name
            for name in GENERATED
            if not (REPO_ROOT / "proto" / name).exists()
            or not filecmp.cmp(fresh / name, REPO_ROOT / "proto" / name, shallow=False)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated files: " + ", ".join(stale) + "; run: python -m proto.regenerate")
            return 1
        print("generated protobuf modules are current")
        return 0
    generate_into(REPO_ROOT)
    print("regenerated " + ", ".join(f"proto/{n}" for n in GENERATED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
