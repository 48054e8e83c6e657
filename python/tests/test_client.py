"""Every wrapper call against a real `ward serve` (fixtures in conftest.py), failures included.

Results are checked against what the `ward` command line computes from the same store (a
separate code path), not against numbers written here.
"""

import datetime as dt
import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import ward_client
from conftest import AS_OF, COHORT_PATIENTS, run_ward

HASH = re.compile(r"^b3:[0-9a-f]{64}$")
UNKNOWN = "b3:" + "0" * 64


def patient(i):
    return f"P{i:07d}"


# -- health, datasets, Flight ------------------------------------------------------------


def test_health(client):
    assert client.health() == "SERVING"
    for service in ("ward.v1.Datasets", "ward.v1.Features", "ward.v1.Ingest"):
        assert client.health(service) == "SERVING", service


def test_datasets_match_the_command_line(client, cohort):
    listed = client.datasets()
    cli = json.loads(cohort.ward("datasets", "--json"))
    assert [d.hash for d in listed] == [m["hash"] for m in cli]
    assert {d.kind for d in listed} >= {"raw", "curated", "timeline"}
    curated = client.datasets(kind="curated")
    assert curated and all(d.kind == "curated" for d in curated)
    assert sorted(d.hash for d in curated) == sorted(cohort.curated)
    enc = client.datasets(name="encounters")
    assert len(enc) == 1 and enc[0].name == "encounters" and enc[0].hash in cohort.curated


def test_manifest(client, cohort):
    m = client.manifest("encounters")
    cli = json.loads(cohort.ward("show", "encounters", "--json"))
    assert m.hash == cli["hash"] and m.rows == cli["rows"] and m.kind == "curated"
    assert [c.name for c in m.columns] == [c["name"] for c in cli["schema"]]
    assert [c.data_type for c in m.columns] == [c["type"] for c in cli["schema"]]
    # A unique prefix names the same version.
    assert client.manifest(m.hash[:12]).hash == m.hash
    tl = client.manifest(cohort.timelines["readmission"])
    assert tl.kind == "timeline" and tl.definition and set(tl.inputs) <= set(cohort.curated)


def test_verify(client, cohort):
    for h in cohort.curated + list(cohort.timelines.values()):
        v = client.verify(h)
        assert v.ok and v, f"{h}: {v.problem}"
        assert v.hash == h and v.problem == "" and v.files >= 1
        assert v.rows == client.manifest(h).rows


def test_tag(client, cohort):
    h = cohort.timelines["readmission_online"]
    assert client.tag("py-model-2024", h) == h
    assert client.manifest("py-model-2024").hash == h


def test_dataset_over_flight(client, cohort):
    m = client.manifest("encounters")
    t = client.dataset("encounters")
    assert isinstance(t, pa.Table)
    assert t.num_rows == m.rows
    assert t.column_names == [c.name for c in m.columns]
    by_hash = client.dataset(m.hash)
    assert by_hash.equals(t)
    # The same rows as the command line's Parquet export.
    import pyarrow.parquet as pq

    out = cohort.root / "encounters.parquet"
    cohort.ward("export", m.hash, out)
    exported = pq.read_table(out)
    assert t.column("encounter_id").to_pylist() == exported.column("encounter_id").to_pylist()
    patients = client.dataset("patients")
    assert pc.count_distinct(patients.column("patient_id")).as_py() == COHORT_PATIENTS


# -- features ----------------------------------------------------------------------------


def test_feature_sets(client, cohort):
    sets = {s.name: s for s in client.feature_sets()}
    assert {"readmission", "readmission_online"} <= set(sets)
    online, training = sets["readmission_online"], sets["readmission"]
    assert online.timeline == cohort.timelines["readmission_online"]
    assert training.timeline == cohort.timelines["readmission"]
    assert not any(f.is_label for f in online.features)
    labels = [f.name for f in training.features if f.is_label]
    assert labels == ["readmitted_30d"]
    # `readmission` extends `readmission_online`.
    assert [f.name for f in online.features] == [
        f.name for f in training.features if not f.is_label
    ]
    assert HASH.match(online.definition) and online.definition != training.definition


def test_materialize_is_deterministic(client, cohort):
    r = client.materialize("readmission_online")
    # The command line made the same timeline from the same curated versions: built on
    # incrementally, no patient changed.
    assert r.timeline == cohort.timelines["readmission_online"]
    assert r.created is False
    assert r.previous == r.timeline and r.full_reason == ""
    assert r.patients == 0 and 0 < r.reused <= COHORT_PATIENTS and r.change_points > 0
    assert client.verify(r.timeline).ok
    full = client.materialize("readmission_online", full=True)
    assert full.timeline == r.timeline and full.previous == ""
    assert "asked for" in full.full_reason
    assert 0 < full.patients <= COHORT_PATIENTS and full.change_points == r.change_points


def cli_get(cohort, set_name, patients, as_of):
    args = ["get", "--set", set_name, "--as-of", as_of, "--json"]
    for p in patients:
        args += ["--patient", p]
    return json.loads(cohort.ward(*args))


def test_online_features_match_the_command_line(client, cohort):
    ids = [patient(i) for i in range(0, 40)] + ["P9999999"]
    df = client.get_online_features("readmission_online", ids, as_of=AS_OF)
    assert df["patient_id"].tolist() == ids
    assert df.attrs["timeline"] == cohort.timelines["readmission_online"]
    features = df.attrs["features"]
    declared = {s.name: s for s in client.feature_sets()}["readmission_online"].features
    assert sorted(features) == sorted(f.name for f in declared)
    assert list(df.columns) == (
        ["patient_id"] + features + [f + ward_client.STATUS_SUFFIX for f in features]
    )
    expected = cli_get(cohort, "readmission_online", ids, AS_OF)
    present = 0
    for row, exp in zip(df.itertuples(index=False), expected):
        row = row._asdict()
        assert row["patient_id"] == exp["patient_id"]
        for f in features:
            want = exp["features"][f]
            assert row[f + "__status"] == want["status"], (row["patient_id"], f)
            got = row[f]
            if want["value"] is None:
                assert got is None or pd.isna(got), (row["patient_id"], f, got)
            else:
                assert got == want["value"], (row["patient_id"], f, got, want)
            present += want["status"] == "present"
    assert present > 0
    # An unknown patient is no error: no data (counts are 0, present).
    unknown = df[df["patient_id"] == "P9999999"].iloc[0]
    for f in ("age", "sex", "hemoglobin_last", "lace_total"):
        assert unknown[f + "__status"] == "no_data" and pd.isna(unknown[f]), f
    assert unknown["admissions_365d"] == 0.0 and unknown["admissions_365d__status"] == "present"


def test_online_feature_subset_and_time_forms(client):
    ids = [patient(i) for i in range(5)]
    df = client.get_online_features(
        "readmission_online", ids, as_of=AS_OF, features=["sex", "age"], statuses=False
    )
    assert list(df.columns) == ["patient_id", "sex", "age"]
    assert df["sex"].dropna().isin(["female", "male", "other", "unknown"]).all()
    as_dt = client.get_online_features(
        "readmission_online", ids, as_of=dt.datetime(2024, 6, 1), features=["sex", "age"], statuses=False
    )
    as_date = client.get_online_features(
        "readmission_online", ids, as_of=dt.date(2024, 6, 1), features=["sex", "age"], statuses=False
    )
    pd.testing.assert_frame_equal(df, as_dt)
    pd.testing.assert_frame_equal(df, as_date)
    # Ages move with the lookup time: computed at t, never stored stale.
    later = client.get_online_features(
        "readmission_online", ids, as_of="2024-12-31T00:00:00Z", features=["age"], statuses=False
    )
    diff = (later["age"] - df["age"]).dropna()
    assert len(diff) > 0 and diff.isin([0.0, 1.0]).all()


def entity_rows():
    """Entity rows: some patients at two times, a duplicate row and an unknown patient."""
    rows = []
    for i in range(30):
        rows.append((patient(i), "2023-03-01T00:00:00Z", f"r{len(rows)}"))
        rows.append((patient(i), AS_OF, f"r{len(rows)}"))
    rows.append(rows[0][:2] + (f"r{len(rows)}",))  # a duplicate (patient, time)
    rows.append(("P9999999", AS_OF, f"r{len(rows)}"))
    return pd.DataFrame(
        {
            "patient_id": [r[0] for r in rows],
            "timestamp": pd.to_datetime([r[1] for r in rows], utc=True),
            "row_id": [r[2] for r in rows],
        }
    )


def test_historical_features(client, cohort):
    entities = entity_rows()
    df, h = client.get_historical_features("readmission", entities)
    assert HASH.match(h) and df.attrs["training_set"] == h
    assert df.attrs["timeline"] == cohort.timelines["readmission"]
    assert df.attrs["rows"] == len(entities) == len(df)
    # One output row per entity row, in input order, pass-through columns kept.
    assert df["row_id"].tolist() == entities["row_id"].tolist()
    assert df["patient_id"].tolist() == entities["patient_id"].tolist()
    assert "readmitted_30d" in df.columns
    # Same inputs, same training set; the stored version is what was streamed.
    df2, h2 = client.get_historical_features("readmission", entities)
    assert h2 == h
    pd.testing.assert_frame_equal(df, df2)
    stored = client.dataset(h)
    assert stored.num_rows == len(df) and client.manifest(h).kind == "training"
    assert client.verify(h).ok
    # Pinning the timeline explicitly gives the same set.
    _, h3 = client.get_historical_features("readmission", entities, timeline=cohort.timelines["readmission"])
    assert h3 == h
    # "As occurred" reads a timeline materialized that way: another training set.
    occurred = client.materialize("readmission", as_occurred=True)
    assert occurred.timeline != cohort.timelines["readmission"]
    df4, h4 = client.get_historical_features("readmission", entities, as_occurred=True)
    assert HASH.match(h4) and h4 != h and df4.attrs["timeline"] == occurred.timeline
    assert df4["row_id"].tolist() == entities["row_id"].tolist()
    # ... and leaves the "as known" answers alone.
    _, h5 = client.get_historical_features("readmission", entities)
    assert h5 == h


def test_historical_agrees_with_online(client, cohort):
    """One lookup serves both: a training row at t holds the online values at t."""
    ids = [patient(i) for i in range(30)]
    online = client.get_online_features("readmission_online", ids, as_of=AS_OF)
    entities = pd.DataFrame(
        {"patient_id": ids, "timestamp": pd.to_datetime([AS_OF] * len(ids), utc=True)}
    )
    hist, _ = client.get_historical_features("readmission_online", entities)
    compared = 0
    for f in online.attrs["features"]:
        if f not in hist.columns:
            continue
        a, b = online[f].tolist(), hist[f].tolist()
        for pid, x, y in zip(ids, a, b):
            if x is None or (isinstance(x, float) and pd.isna(x)):
                assert y is None or pd.isna(y), (pid, f, x, y)
            else:
                assert x == pytest.approx(y) if isinstance(x, float) else x == y, (pid, f, x, y)
            compared += 1
    assert compared >= 20 * 30 // 2, f"only {compared} values compared; columns {list(hist.columns)}"


def test_historical_from_uploaded_entities(client, cohort):
    entities = entity_rows()
    ref = client.upload_entities(entities, name="py-entities")
    assert HASH.match(ref)
    assert client.manifest(ref).rows == len(entities)
    by_ref, h_ref = client.get_historical_features("readmission", ref)
    inline, h_inline = client.get_historical_features("readmission", entities)
    assert by_ref.attrs["entities"] == ref
    assert h_ref == h_inline
    pd.testing.assert_frame_equal(by_ref, inline)


# -- ingest (own server over an empty store) ---------------------------------------------


def test_ingest_paths_and_upload(empty_server, ward_bin, tmp_path):
    src = tmp_path / "csv"
    run_ward(ward_bin, tmp_path / "scratch", "synth", "--patients", 20, "--seed", 3, "--format", "csv", "--out", src)
    with ward_client.Client(empty_server.addr, timeout=120) as c:
        r = c.ingest(str(src), "csv")
        assert HASH.match(r.raw_hash) and r.records > 0 and r.bad_records == 0
        assert r.quarantine_hash == "" and r.files == len(list(src.iterdir())) and r.bytes > 0
        assert {"patients", "encounters", "observations"} <= set(r.curated)
        assert r.records == sum(v.parsed_rows for v in r.curated.values())
        lines = (src / "patients.csv").read_text().splitlines()
        patients = r.curated["patients"]
        assert patients.rows == patients.parsed_rows == len(lines) - 1  # row versions
        assert c.manifest("patients").hash == patients.hash
        assert c.manifest(patients.hash).rows == patients.rows
        # The same bytes uploaded with one bad record: quarantined and counted.
        header = lines[0].split(",")
        bad = lines[1].split(",")
        bad[header.index("birth_date")] = "not-a-date"
        body = "\n".join([lines[0], ",".join(bad)] + lines[2:]) + "\n"
        upload = tmp_path / "patients.csv"
        upload.write_text(body)
        with open(upload, "rb") as f:
            r2 = c.ingest(f, "csv")
        assert r2.bad_records == 1 and sum(r2.bad_by_reason.values()) == 1
        assert HASH.match(r2.quarantine_hash)
        assert r2.curated["patients"].parsed_rows == len(lines) - 2
        q = c.dataset(r2.quarantine_hash)
        assert q.num_rows == 1
        # Curated versions are cumulative and deduplicated: the upload added nothing new.
        assert r2.curated["patients"].rows == patients.rows
        # An explicit mapping (the curated layout) read from a file path: the same rows again.
        from conftest import REPO

        r3 = c.ingest([str(src / "patients.csv")], "csv", mapping=REPO / "mappings" / "curated.toml")
        assert r3.curated["patients"].hash == patients.hash


# -- errors ------------------------------------------------------------------------------


def test_error_unknown_hash(client):
    for call in (client.manifest, client.verify, client.dataset):
        with pytest.raises(ward_client.NotFound) as e:
            call(UNKNOWN)
        assert e.value.code == "NOT_FOUND"
        assert UNKNOWN[:11] in e.value.message, e.value.message


def test_error_bad_reference(client):
    with pytest.raises(ward_client.InvalidArgument) as e:
        client.manifest("b3:zz")
    assert "b3:zz" in e.value.message


def test_error_unknown_feature_set(client):
    with pytest.raises(ward_client.NotFound) as e:
        client.get_online_features("no_such_set", [patient(0)])
    assert "no_such_set" in e.value.message
    with pytest.raises(ward_client.NotFound):
        client.materialize("no_such_set")
    with pytest.raises(ward_client.NotFound):
        client.get_historical_features("no_such_set", entity_rows().head(2))


def test_error_label_set_online(client):
    with pytest.raises(ward_client.FailedPrecondition) as e:
        client.get_online_features("readmission", [patient(0)], as_of=AS_OF)
    assert "label" in e.value.message.lower()


def test_error_bad_entity_rows(client):
    entities = entity_rows().head(4).copy()
    entities.loc[2, "timestamp"] = pd.NaT
    with pytest.raises(ward_client.InvalidArgument) as e:
        client.get_historical_features("readmission", entities)
    assert "2" in e.value.message and "timestamp" in e.value.message, e.value.message
    # Found by the client before sending: no code.
    with pytest.raises(ward_client.InvalidArgument) as e:
        client.get_historical_features("readmission", entities.drop(columns=["timestamp"]))
    assert e.value.code is None


def test_error_bad_ingest(client, empty_server, tmp_path):
    with ward_client.Client(empty_server.addr, timeout=60) as c:
        with pytest.raises(ward_client.InvalidArgument):
            c.ingest(str(tmp_path), "no-such-format")
        with pytest.raises((ward_client.NotFound, ward_client.InvalidArgument)) as e:
            c.ingest(str(tmp_path / "missing.csv"), "csv")
        assert "missing.csv" in e.value.message
