"""Generate Python, gRPC and typing stubs from protos/ into libs/coffer/api (a build artifact)."""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "libs"


def main() -> int:
    shutil.rmtree(OUT / "coffer" / "api", ignore_errors=True)
    include = str(resources.files("grpc_tools") / "_proto")
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    plugin_grpc = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if plugin is None or plugin_grpc is None:
        print("mypy-protobuf plugins not found next to the interpreter; install '.[dev]'", file=sys.stderr)
        return 1
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--grpc_python_out={OUT}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_grpc}",
        f"--mypy_out={OUT}",
        f"--mypy_grpc_out=only_async:{OUT}",
        *files,
    ]
    rc = protoc.main(args)
    if rc != 0:
        return int(rc)
    print(f"generated {len(files)} proto files into {OUT / 'coffer' / 'api'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
