"""Generate the Python code of the contracts with grpc_tools.protoc (+ mypy-protobuf stubs).

`--check` regenerates into a temporary folder and fails when the committed code differs, so CI
catches stale generated code. The well-known google/protobuf imports come with grpc_tools: no network.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUTPUT = ROOT / "clients" / "python" / "src"
GENERATED_PACKAGE = OUTPUT / "medpay"


def generate(into: Path) -> None:
    protos = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"--python_out={into}",
        f"--grpc_python_out={into}",
        f"--mypy_out=quiet:{into}",
        f"--mypy_grpc_out=quiet:{into}",
        *protos,
    ]
    subprocess.run(command, check=True)
    for package_dir in (into / "medpay").rglob("v1"):
        for folder in (package_dir, package_dir.parent):
            (folder / "__init__.py").touch()


def generated_files(base: Path) -> set[Path]:
    return {p.relative_to(base) for p in (base / "medpay").rglob("v1/*") if p.is_file()}


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        expected, actual = generated_files(fresh), generated_files(OUTPUT)
        stale = sorted(str(p) for p in expected ^ actual)
        stale += sorted(str(p) for p in expected & actual if not filecmp.cmp(fresh / p, OUTPUT / p, False))
    if stale:
        print("generated code is stale; run `make protos` and commit:", *stale, sep="\n  ")
        return 1
    print("generated code is current")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    if args.check:
        return check()
    for old in GENERATED_PACKAGE.rglob("v1"):
        shutil.rmtree(old)
    generate(OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
