#!/usr/bin/env python3
"""Regenerate ward_client's gRPC stubs from ../proto/ward/v1/*.proto.

    python python/generate_stubs.py            # rewrite python/ward_client/_pb/
    python python/generate_stubs.py --out DIR  # write them elsewhere (the CI check compares)

Needs grpcio-tools at the version pinned in requirements-dev.txt (the generated code names
the protobuf and grpcio versions it was made with). The stubs are committed so that
`pip install ./python` needs no code generator; tests/test_stubs.py fails when they no
longer match the protos.

protoc writes `from ward.v1 import x_pb2`; the files are put flat into one package and those
imports made relative, so the client needs no top-level `ward` package (that name belongs to
another project on PyPI).
"""

import argparse
import pathlib
import re
import shutil
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent / "proto"
DEFAULT_OUT = HERE / "ward_client" / "_pb"
INIT = '"""Generated gRPC stubs of proto/ward/v1 (python/generate_stubs.py). Do not edit."""\n'


def proto_files(root=PROTO_ROOT):
    files = sorted((root / "ward" / "v1").glob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {root / 'ward' / 'v1'}")
    return files


def generate(out_dir, proto_root=PROTO_ROOT):
    """Write the stubs into out_dir (created; existing generated files replaced)."""
    from grpc_tools import protoc  # imported here: only this script needs grpcio-tools

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        include = pathlib.Path(protoc.__file__).parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
        ] + [str(p.relative_to(proto_root)) for p in proto_files(proto_root)]
        code = protoc.main(args)
        if code != 0:
            raise SystemExit(f"protoc failed with status {code}")
        for old in out_dir.glob("*_pb2*.py*"):
            old.unlink()
        gen = pathlib.Path(tmp) / "ward" / "v1"
        for src in sorted(gen.iterdir()):
            text = src.read_text(encoding="utf-8")
            text = re.sub(r"^from ward\.v1 import ", "from . import ", text, flags=re.M)
            (out_dir / src.name).write_text(text, encoding="utf-8")
    (out_dir / "__init__.py").write_text(INIT, encoding="utf-8")
    return sorted(p.name for p in out_dir.iterdir() if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    args = ap.parse_args()
    for name in generate(args.out):
        print(pathlib.Path(args.out) / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
