"""The committed gRPC stubs (ward_client/_pb) match proto/ward/v1/*.proto.

Regenerates them into a temporary directory with grpcio-tools (pinned in
requirements-dev.txt) and compares byte for byte. Fix a failure with
`python python/generate_stubs.py`.
"""

import importlib.util
import os
import pathlib

import pytest

from conftest import REPO

PB = REPO / "python" / "ward_client" / "_pb"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_stubs", REPO / "python" / "generate_stubs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_stubs_match_the_protos(tmp_path):
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        msg = "grpcio-tools is not installed (pip install -r requirements-dev.txt)"
        if os.environ.get("WARD_REQUIRE_PYTHON") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    names = _generator().generate(tmp_path)
    committed = sorted(p.name for p in PB.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    assert names == committed, "generated and committed stub files differ in name"
    stale = [n for n in names if (tmp_path / n).read_bytes() != (PB / n).read_bytes()]
    assert not stale, f"stale stubs {stale}: run python python/generate_stubs.py"
    # Every .proto gave its three files.
    protos = sorted(p.stem for p in (REPO / "proto" / "ward" / "v1").glob("*.proto"))
    for stem in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert stem + suffix in names


def test_stub_imports_are_package_relative():
    for path in PB.glob("*_grpc.py"):
        text = path.read_text()
        assert "from ward.v1" not in text, f"{path.name} imports a top-level `ward` package"
