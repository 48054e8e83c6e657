"""The examples in examples/python/ against the session's server: training twice gives the
same training set hash, the hash checks out independently, online scoring runs."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import AS_OF, EXAMPLES, REPO

HASH = re.compile(r"^b3:[0-9a-f]{64}$")


def run_example(script, *args, timeout=900):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "python"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    try:
        import sklearn  # noqa: F401
    except ImportError:
        msg = "scikit-learn is needed by train_readmission.py (pip install -r requirements-dev.txt)"
        if os.environ.get("WARD_REQUIRE_PYTHON") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("model")
    cards = []
    for i in (1, 2):
        card = d / f"card{i}.json"
        out = ok(run_example("train_readmission.py", "--addr", cohort.addr, "--card", card))
        cards.append((out.strip().splitlines()[-1], card))
    return cards


def test_training_twice_gives_the_same_hash(trained, cohort):
    (h1, c1), (h2, c2) = trained
    assert HASH.match(h1) and h1 == h2
    card1, card2 = json.loads(c1.read_text()), json.loads(c2.read_text())
    assert card1["training_set"] == h1
    assert card1["timeline"] == cohort.timelines["readmission"]
    # Nothing in the card depends on when it was made.
    assert card1 == card2
    assert card1["rows"] > 0 and 0 < card1["positives"] < card1["rows"]
    assert card1["label"] == "readmitted_30d"
    assert {c["feature"] for c in card1["columns"]} >= {"age", "lace_total", "hospital_total"}
    auroc = card1["auroc_test"]
    assert auroc is not None and 0.0 <= auroc <= 1.0


def test_training_registers_its_model_card(trained, client):
    h, card_path = trained[0]
    card = json.loads(card_path.read_text())
    reg = card["registered"]
    assert reg["name"] == "readmission-logreg" and HASH.match(reg["card"])
    # Trained twice: the same card, so one version.
    assert json.loads(trained[1][1].read_text())["registered"] == reg
    cards = client.models(name="readmission-logreg")
    assert [c.hash for c in cards] == [reg["card"]]
    c = cards[0]
    assert c.training == h
    assert c.metrics["auroc_test"] == pytest.approx(card["auroc_test"])
    assert c.metrics["rows"] == card["rows"]
    m = client.manifest(reg["card"])
    assert m.kind == "model" and m.inputs == [h]


def test_training_rows_are_the_inpatient_discharges(trained, client):
    card = json.loads(trained[0][1].read_text())
    enc = client.dataset("encounters").to_pandas()
    live = enc[
        (enc["class"] == "inpatient")
        & enc["discharge_time"].notna()
        & enc["retracted_at"].isna()
        & (enc["discharge_disposition"].fillna("") != "exp")
    ]
    stored = client.dataset(card["training_set"])
    assert stored.num_rows == len(live) == client.manifest(card["entities"]).rows
    assert sorted(stored.column("encounter_id").to_pylist()) == sorted(live["encounter_id"])


def test_verify_hash_recomputes_the_training_set_hash(trained, cohort):
    h, card = trained[0]
    out = ok(run_example("verify_hash.py", "--card", card, "--addr", cohort.addr))
    assert out.strip() == h
    out = ok(run_example("verify_hash.py", "--ref", h, "--addr", cohort.addr, "--expect", h))
    assert out.strip() == h
    # The check can fail: a different expectation is a mismatch.
    wrong = run_example("verify_hash.py", "--ref", h, "--addr", cohort.addr, "--expect", "b3:" + "0" * 64)
    assert wrong.returncode == 1 and "MISMATCH" in wrong.stderr


def test_score_online(trained, cohort):
    _, card = trained[0]
    out = ok(
        run_example("score_online.py", "--addr", cohort.addr, "--card", card,
                    "--patients", 25, "--as-of", AS_OF)
    )
    lines = out.strip().splitlines()
    scored = [line for line in lines if line.startswith("P")]
    assert len(scored) == 25
    for line in scored:
        r = float(re.search(r"risk (\S+)", line).group(1))
        assert 0.0 < r < 1.0
    summary = lines[-1]
    assert re.search(r"^25 online lookups .* p50 [0-9.]+ ms, p99 [0-9.]+ ms", summary), summary
    assert cohort.timelines["readmission_online"] in summary
