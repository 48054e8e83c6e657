"""Fixtures: a real `ward serve` over a small synthetic cohort.

The binary is taken from `WARD_BIN`, else `$CARGO_TARGET_DIR/debug/ward` (else
`target/debug/ward` in the repository); nothing is built here. When it is absent the tests
that need it are skipped with a message, except under `WARD_REQUIRE_PYTHON=1` (CI), where
they fail.

The session cohort: `ward synth` (COHORT_PATIENTS patients, seed COHORT_SEED, curated
Parquet), `ward ingest`, `ward materialize` of `readmission_online` and `readmission`
(examples/features/readmission.toml) into a temporary store, then `ward serve --addr
127.0.0.1:0`, whose port is read from its stderr line `listening on 127.0.0.1:PORT`.
"""

import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FEATURES = REPO / "examples" / "features" / "readmission.toml"
EXAMPLES = REPO / "examples" / "python"

COHORT_PATIENTS = 300
COHORT_SEED = 7
# The synthetic period ends 2025-01-01: lookups "now" would be outside every TTL.
AS_OF = "2024-06-01T00:00:00Z"

_LISTENING = re.compile(r"listening on (\S+:\d+)")
_HASH = re.compile(r"^b3:[0-9a-f]{64}$")

# Make the in-repo package importable when it is not pip-installed.
sys.path.insert(0, str(REPO / "python"))


def _required():
    return os.environ.get("WARD_REQUIRE_PYTHON") == "1"


def ward_binary():
    """The ward binary, or skip (fail under WARD_REQUIRE_PYTHON=1) with a message."""
    env = os.environ.get("WARD_BIN")
    if env:
        path = pathlib.Path(env)
    else:
        target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
        path = pathlib.Path(target) / "debug" / "ward"
    if path.is_file() and os.access(path, os.X_OK):
        return path
    msg = (
        f"the ward binary {path} is absent: run `cargo build --bin ward` "
        "(with the same CARGO_TARGET_DIR) or set WARD_BIN"
    )
    if _required():
        pytest.fail(msg + " (WARD_REQUIRE_PYTHON=1)", pytrace=False)
    pytest.skip(msg)


def run_ward(binary, store, *args, timeout=900):
    """Runs `ward --store STORE ARGS...`; returns stdout. Fails the test with the output."""
    cmd = [str(binary), "--store", str(store), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


def last_hash(stdout):
    """The `b3:` hash a version-making command prints as its last stdout line."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    assert lines and _HASH.match(lines[-1]), f"no hash as the last line of:\n{stdout}"
    return lines[-1]


class WardServer:
    """`ward serve` on 127.0.0.1:0 over a store; stopped with SIGTERM."""

    def __init__(self, binary, store, workdir, features=(FEATURES,)):
        self.binary = binary
        self.store = pathlib.Path(store)
        self.config = pathlib.Path(workdir) / "serve.toml"
        lines = [
            "# Written by python/tests/conftest.py.",
            'addr = "127.0.0.1:0"',
            f"store = {_toml_str(self.store)}",
            "features = [" + ", ".join(_toml_str(f) for f in features) + "]",
            "[ingest]",
            # IngestPaths reads only under its roots: the test's own folder.
            f"roots = [{_toml_str(workdir)}]",
        ]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.stderr_lines = []
        self.addr = None
        self.proc = None

    def start(self, timeout=120):
        cmd = [
            str(self.binary), "--store", str(self.store),
            "serve", "--addr", "127.0.0.1:0", "--config", str(self.config),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        found = threading.Event()

        def drain():
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))
                m = _LISTENING.search(line)
                if m and self.addr is None:
                    self.addr = m.group(1)
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.1):
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"ward serve printed no `listening on` line in {timeout} s:\n{self.log()}")
        if self.addr is None:
            code = self.proc.wait(10)
            pytest.fail(f"ward serve exited {code} before listening:\n{self.log()}", pytrace=False)
        return self

    def log(self):
        return "\n".join(self.stderr_lines)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc is not None else None


def _toml_str(path):
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Cohort:
    """What the session fixture built: the store, the hashes, the running server."""

    def __init__(self, binary, root):
        self.binary = binary
        self.root = pathlib.Path(root)
        self.store = self.root / "store"
        self.source = self.root / "cohort"
        self.server = None
        self.curated = []
        self.timelines = {}

    @property
    def addr(self):
        return self.server.addr

    def ward(self, *args, timeout=900):
        return run_ward(self.binary, self.store, *args, timeout=timeout)

    def client(self, **kwargs):
        from ward_client import Client

        return Client(self.addr, timeout=120, **kwargs)


@pytest.fixture(scope="session")
def ward_bin():
    return ward_binary()


@pytest.fixture(scope="session")
def cohort(ward_bin, tmp_path_factory):
    c = Cohort(ward_bin, tmp_path_factory.mktemp("ward"))
    c.ward("init")
    c.ward(
        "synth", "--patients", COHORT_PATIENTS, "--seed", COHORT_SEED,
        "--format", "parquet", "--out", c.source,
    )
    out = c.ward("ingest", "--format", "parquet", c.source)
    c.curated = [line for line in out.split() if _HASH.match(line)]
    assert c.curated, f"ingest printed no curated hash:\n{out}"
    for name in ("readmission_online", "readmission"):
        c.timelines[name] = last_hash(
            c.ward("materialize", "--features", FEATURES, "--set", name)
        )
    c.server = WardServer(ward_bin, c.store, c.root).start()
    yield c
    code = c.server.stop()
    # A clean exit on SIGTERM is part of the contract (graceful shutdown).
    assert code == 0, f"ward serve exited {code} on SIGTERM:\n{c.server.log()}"


@pytest.fixture()
def client(cohort):
    with cohort.client() as c:
        yield c


@pytest.fixture()
def empty_server(ward_bin, tmp_path):
    """A server over a new, empty store (for ingest tests that must not touch the cohort)."""
    store = tmp_path / "store"
    run_ward(ward_bin, store, "init")
    server = WardServer(ward_bin, store, tmp_path).start()
    yield server
    server.stop()
