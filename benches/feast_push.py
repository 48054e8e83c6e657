#!/usr/bin/env python3
"""Feast 0.67's push path, set up as the peer of Ward's live feeds.

Used by `cargo bench --bench live` (benches/live.rs) for the side-by-side streamed run:

    feast_push.py --values VALUES.parquet --repo DIR [--port PORT]

VALUES.parquet holds one row per patient: `patient_id`, `event_timestamp` and
`hemoglobin_last` (float64), the patients' last hemoglobin as Ward's online set answers it
before the stream starts. This script makes a throw-away feature repo in DIR (provider local,
SQLite online store, file offline store), applies an Entity `patient`, a PushSource
`labs_push` (its batch source VALUES.parquet) and a FeatureView `labs` fed by it, materializes
the values into SQLite, then execs `feast serve` (HTTP) on 127.0.0.1:PORT with one worker and
no access log. The bench then pushes lab results to `POST /push` (`"to": "online"`: Feast
writes the pushed row to its online store before it answers) and reads them back through
`POST /get-online-features`. It prints `ready` on stdout once materialized.
"""
import argparse
import os
import sys
import textwrap
from datetime import datetime, timedelta, timezone

os.environ.setdefault("FEAST_USAGE", "False")  # no telemetry (offline machine)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--port", type=int, default=6567)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Float64

    os.makedirs(a.repo, exist_ok=True)
    with open(os.path.join(a.repo, "feature_store.yaml"), "w") as fh:
        fh.write(textwrap.dedent(f"""\
            project: ward_live_bench
            registry: {a.repo}/registry.db
            provider: local
            online_store:
              type: sqlite
              path: {a.repo}/online.db
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """))
    patient = Entity(name="patient", join_keys=["patient_id"], value_type=ValueType.STRING)
    batch = FileSource(name="labs_src", path=os.path.abspath(a.values),
                       timestamp_field="event_timestamp")
    push = PushSource(name="labs_push", batch_source=batch)
    fv = FeatureView(name="labs", entities=[patient], ttl=timedelta(days=3650),
                     schema=[Field(name="hemoglobin_last", dtype=Float64)],
                     source=push, online=True)
    store = FeatureStore(repo_path=a.repo)
    store.apply([patient, push, fv])
    end = datetime.now(timezone.utc) + timedelta(days=1)
    store.materialize(start_date=end - timedelta(days=3650), end_date=end)
    print("ready", flush=True)
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    os.chdir(a.repo)
    os.execv(feast, [feast, "serve", "-h", "127.0.0.1", "-p", str(a.port),
                     "-w", str(a.workers), "--no-access-log", "-r", "3600"])


if __name__ == "__main__":
    main()
