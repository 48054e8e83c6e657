#!/usr/bin/env python3
"""Feast 0.67's Python feature server, set up to serve the same features as Ward.

Used by `cargo bench --bench serve` (benches/serve.rs) for the side-by-side online run:

    feast_online.py --values VALUES.parquet --repo DIR [--port PORT]

VALUES.parquet holds one row per patient: `patient_id`, `event_timestamp` and the 20 feature
columns (float64), written by the bench from Ward's own online answers at "now", so both
servers hold the same values for the same patients. This script makes a throw-away feature
repo in DIR (provider local, SQLite online store, file offline store), applies an Entity
`patient` and a FeatureView `readmission` over VALUES.parquet, materializes it into SQLite,
then execs `feast serve` (HTTP) on 127.0.0.1:PORT with one worker and no access log: the
server a Feast user runs. It prints `ready` on stdout once materialized.
"""
import argparse
import os
import sys
import textwrap
from datetime import datetime, timedelta, timezone

os.environ.setdefault("FEAST_USAGE", "False")  # no telemetry (offline machine)

import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--port", type=int, default=6566)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    os.makedirs(a.repo, exist_ok=True)
    with open(os.path.join(a.repo, "feature_store.yaml"), "w") as fh:
        fh.write(textwrap.dedent(f"""\
            project: ward_bench
            registry: {a.repo}/registry.db
            provider: local
            online_store:
              type: sqlite
              path: {a.repo}/online.db
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """))
    schema = pq.read_schema(a.values)
    features = [n for n in schema.names if n not in ("patient_id", "event_timestamp")]
    patient = Entity(name="patient", join_keys=["patient_id"], value_type=ValueType.STRING)
    src = FileSource(name="readmission_src", path=os.path.abspath(a.values),
                     timestamp_field="event_timestamp")
    fv = FeatureView(name="readmission", entities=[patient], ttl=timedelta(days=3650),
                     schema=[Field(name=f, dtype=Float64) for f in features],
                     source=src, online=True)
    store = FeatureStore(repo_path=a.repo)
    store.apply([patient, fv])
    end = datetime.now(timezone.utc) + timedelta(days=1)
    store.materialize(start_date=end - timedelta(days=3650), end_date=end)
    print("ready", flush=True)
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    os.chdir(a.repo)
    os.execv(feast, [feast, "serve", "-h", "127.0.0.1", "-p", str(a.port),
                     "-w", str(a.workers), "--no-access-log", "-r", "3600"])


if __name__ == "__main__":
    main()
