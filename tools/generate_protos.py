"""Generates the Python code for the contracts in proto/.

The generated package (petitions/v1/) is committed so that the services run
without a build step, but it is never edited by hand: this script is its only
author. `--check` regenerates into a temporary directory and fails when the
committed code differs, which CI runs so that proto/ stays the single source
of truth.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "proto"
PACKAGE_DIR = Path("petitions") / "v1"
INIT_TEXT = '"""Generated from proto/ by tools/generate_protos.py; do not edit."""\n'


def generate(out_dir: Path) -> None:
    """Writes messages, gRPC stubs and their typing stubs under out_dir."""
    protos = sorted(str(p) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    # The mypy plugins are console scripts installed beside this interpreter.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for package in (out_dir / "petitions", out_dir / PACKAGE_DIR):
        (package / "__init__.py").write_text(INIT_TEXT)
        (package / "py.typed").write_text("")


def differences(expected: Path, actual: Path) -> list[str]:
    """Names the files that are missing, extra or different in actual."""
    found: list[str] = []
    comparison = filecmp.dircmp(expected, actual)
    stack = [(comparison, Path())]
    while stack:
        node, prefix = stack.pop()
        found += [str(prefix / n) + " (missing)" for n in node.left_only]
        found += [str(prefix / n) + " (not generated)" for n in node.right_only if n != "__pycache__"]
        found += [str(prefix / n) + " (differs)" for n in node.diff_files]
        stack += [(sub, prefix / name) for name, sub in node.subdirs.items() if name != "__pycache__"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    options = parser.parse_args()
    if not options.check:
        generate(REPO)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = differences(Path(tmp) / "petitions", REPO / "petitions")
    if stale:
        print("generated code is out of date with proto/; run `make proto`:", *stale, sep="\n  ")
        return 1
    print("generated code matches proto/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
