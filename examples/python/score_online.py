#!/usr/bin/env python3
"""Score patients through Ward's online lookups with a trained model card; print latency.

    python examples/python/train_readmission.py --card model_card.json
    python examples/python/score_online.py --card model_card.json --patients 200 --as-of 2024-12-31

For each patient, one GetOnlineFeatures request (one patient, the model's features, from the
`readmission_online` set: the same features as the training set without the label), then
the model card's logistic regression: p = 1 / (1 + exp(-(intercept + sum(coef * z)))), where
z is each column standardized with the card's mean and scale after the card's imputation
(a value that is not `present` — no data, outside its TTL — counts as missing, exactly as in
training, where Ward gives no value either).

Prints one line per patient (id, risk, features present) and, at the end, the latency of the
requests as the client saw them (wall time of the call, including the DataFrame
conversion): p50, p99, mean and max, in milliseconds. The first request is a warm-up and not
counted. The synthetic cohort ends on 2025-01-01, so score it `--as-of` a time inside it; at
the server's "now" most values are outside their TTL.
"""

import argparse
import json
import math
import sys
import time

import numpy as np


def risk(row, card):
    """The model's probability for one patient (a mapping feature -> value)."""
    z = card["intercept"]
    for c in card["columns"]:
        v = row.get(c["feature"])
        if c["encoding"] == "number":
            x = c["fill"] if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
        else:
            x = 1.0 if v == c["value"] else 0.0
        z += c["coef"] * (x - c["mean"]) / c["scale"]
    return 1.0 / (1.0 + math.exp(-z))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051", help="the Ward server (host:port)")
    ap.add_argument("--token", help="bearer token, when the server requires one")
    ap.add_argument("--tls", help="root certificate (PEM) to trust, for a TLS server")
    ap.add_argument("--card", default="model_card.json", help="the model card to score with")
    ap.add_argument("--set", help="the online feature set (default: the card's)")
    ap.add_argument("--patient", action="append", default=[], help="a patient id (repeatable)")
    ap.add_argument("--patients", type=int, default=100,
                    help="without --patient: score the first N patients of the `patients` version")
    ap.add_argument("--as-of", help="RFC 3339 time or date to score at (default: the server's now)")
    ap.add_argument("--quiet", action="store_true", help="print only the latency summary")
    args = ap.parse_args(argv)

    from ward_client import Client

    with open(args.card, encoding="utf-8") as f:
        card = json.load(f)
    features = sorted({c["feature"] for c in card["columns"]})
    online_set = args.set or card.get("online_feature_set", "readmission_online")

    with Client(args.addr, token=args.token, tls=args.tls) as ward:
        ids = list(args.patient)
        if not ids:
            table = ward.dataset("patients").column("patient_id").unique()
            ids = sorted(table.to_pylist())[: args.patients]
        if not ids:
            raise SystemExit("no patients to score")
        ward.get_online_features(online_set, ids[:1], as_of=args.as_of, features=features)  # warm-up
        latencies = []
        timelines = set()
        for pid in ids:
            start = time.perf_counter()
            df = ward.get_online_features(online_set, [pid], as_of=args.as_of, features=features)
            latencies.append(time.perf_counter() - start)
            timelines.add(df.attrs["timeline"])
            row = df.iloc[0]
            values = {f: row[f] for f in features}
            present = sum(row[f + "__status"] == "present" for f in features)
            if not args.quiet:
                print(f"{pid}  risk {risk(values, card):.3f}  ({present}/{len(features)} features present)")

    ms = np.array(latencies) * 1000.0
    print(
        f"{len(ms)} online lookups (1 patient x {len(features)} features, set {online_set}, "
        f"timeline {', '.join(sorted(timelines))}): "
        f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms, "
        f"mean {ms.mean():.3f} ms, max {ms.max():.3f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
