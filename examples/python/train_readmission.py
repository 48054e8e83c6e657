#!/usr/bin/env python3
"""Train a 30-day readmission model from a Ward training set, and write its model card.

    ward demo                                   # or: ward serve over a store with a cohort
    python examples/python/train_readmission.py --addr 127.0.0.1:50051 --card model_card.json

Steps, all through the Python client (`pip install ./python`):

1. Entity rows: the curated `encounters` version, read over Arrow Flight, filtered to live
   inpatient discharges (class `inpatient`, a discharge time, the row's current version,
   disposition not `exp`); one row per stay, `timestamp` = the discharge time.
2. The `readmission` training set for those rows (`get_historical_features`): every
   feature as known at the discharge, and the label `readmitted_30d` (an inpatient admission
   in the 30 days after). Ward returns it with its content hash.
3. Preprocessing fitted on the training split only: numbers imputed with the median, text
   one-hot encoded (the categories seen in training), everything standardized.
4. A logistic regression (scikit-learn, L2, C = 1), split by patient (GroupShuffleSplit,
   fixed seed) so that no patient is on both sides; AUROC on the held-out patients.
5. The model card (JSON): the training set hash (with the timeline and entity hashes), the
   preprocessing and coefficients (enough to score without scikit-learn, as
   score_online.py does), the split and the AUROC. It holds no wall-clock time, so the same
   store, seed and code give the same card.
6. The card registered in Ward (`register_model`, docs/models.md) under `--name`, with the
   training set hash and its metrics (held-out AUROC, rows, positives), so the store's
   lineage runs from the raw input to this model (`/ui/models` on `ward serve --http`).
   Registering needs the `datasets_write` permission; `--no-register` skips it. The same
   card registered twice is the same version.

Prints a summary to stderr and the training set hash as the last line of stdout. Running it
twice gives the same hash: that hash names exactly the rows the model was trained on
(check them with verify_hash.py --ref HASH).
"""

import argparse
import json
import sys

import numpy as np
import pandas as pd


def discharges(client, ref="encounters"):
    """Entity rows (patient_id, timestamp, encounter_id) of live inpatient discharges."""
    table = client.dataset(ref)
    cols = ["patient_id", "encounter_id", "class", "discharge_time", "discharge_disposition", "retracted_at"]
    df = table.select(cols).to_pandas()
    keep = (
        (df["class"] == "inpatient")
        & df["discharge_time"].notna()
        & df["retracted_at"].isna()
        & (df["discharge_disposition"].fillna("") != "exp")
    )
    rows = df.loc[keep, ["patient_id", "discharge_time", "encounter_id"]].rename(
        columns={"discharge_time": "timestamp"}
    )
    rows = rows.sort_values(["timestamp", "patient_id", "encounter_id"], kind="stable")
    return rows.reset_index(drop=True)


def fit_preprocessing(train, numeric, text):
    """Per encoded column: its source feature, how it is encoded, its center and scale."""
    columns = []
    for f in numeric:
        values = pd.to_numeric(train[f], errors="coerce")
        median = float(values.median()) if values.notna().any() else 0.0
        filled = values.fillna(median)
        columns.append({"feature": f, "encoding": "number", "fill": median,
                        "mean": float(filled.mean()), "scale": _scale(filled)})
    for f in text:
        for value in sorted(train[f].dropna().astype(str).unique()):
            indicator = (train[f].astype(object) == value).astype(float)
            columns.append({"feature": f, "encoding": "one_hot", "value": value,
                            "mean": float(indicator.mean()), "scale": _scale(indicator)})
    return columns


def _scale(x):
    s = float(np.std(np.asarray(x, dtype=float)))
    return s if s > 0 else 1.0


def encode(frame, columns):
    """The standardized design matrix of `frame` (a DataFrame with the feature columns)."""
    out = np.empty((len(frame), len(columns)))
    for j, c in enumerate(columns):
        if c["encoding"] == "number":
            x = pd.to_numeric(frame[c["feature"]], errors="coerce").astype(float).fillna(c["fill"])
        else:
            x = (frame[c["feature"]].astype(object) == c["value"]).astype(float)
        out[:, j] = (np.asarray(x, dtype=float) - c["mean"]) / c["scale"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:50051", help="the Ward server (host:port)")
    ap.add_argument("--token", help="bearer token, when the server requires one")
    ap.add_argument("--tls", help="root certificate (PEM) to trust, for a TLS server")
    ap.add_argument("--set", default="readmission", help="the training feature set")
    ap.add_argument("--encounters", default="encounters", help="the curated encounters version")
    ap.add_argument("--seed", type=int, default=20240601, help="seed of the patient split")
    ap.add_argument("--test-size", type=float, default=0.25, help="share of patients held out")
    ap.add_argument("--card", default="model_card.json", help="where to write the model card")
    ap.add_argument("--name", default="readmission-logreg", help="the model's name in Ward")
    ap.add_argument("--owner", default="", help="who answers for the model (the registered card's owner)")
    ap.add_argument("--no-register", action="store_true", help="do not register the card in Ward")
    args = ap.parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit

    from ward_client import Client

    with Client(args.addr, token=args.token, tls=args.tls) as ward:
        sets = {s.name: s for s in ward.feature_sets()}
        if args.set not in sets:
            raise SystemExit(f"feature set {args.set!r} is not served (known: {sorted(sets)})")
        info = sets[args.set]
        labels = [f.name for f in info.features if f.is_label]
        if len(labels) != 1:
            raise SystemExit(f"feature set {args.set!r} needs exactly one label, has {labels}")
        label = labels[0]
        entities = discharges(ward, args.encounters)
        if entities.empty:
            raise SystemExit(f"no inpatient discharges in {args.encounters!r}")
        train_set, training_hash = ward.get_historical_features(args.set, entities)

    names = [f.name for f in info.features if not f.is_label]
    missing = [f for f in names + [label] if f not in train_set.columns]
    if missing:
        raise SystemExit(f"the training set lacks columns {missing}; it has {list(train_set.columns)}")
    y_all = pd.to_numeric(train_set[label], errors="coerce")
    known = y_all.notna()
    data = train_set.loc[known].reset_index(drop=True)
    y = y_all[known].astype(int).to_numpy()
    text = [f for f in names if data[f].dtype == object or pd.api.types.is_string_dtype(data[f])]
    numeric = [f for f in names if f not in text]

    split = GroupShuffleSplit(n_splits=1, test_size=args.test_size, random_state=args.seed)
    train_idx, test_idx = next(split.split(data, y, groups=data["patient_id"]))
    train, test = data.iloc[train_idx], data.iloc[test_idx]
    if len(set(y[train_idx])) < 2:
        raise SystemExit("the training split holds one class only: use a larger cohort")
    columns = fit_preprocessing(train, numeric, text)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(encode(train, columns), y[train_idx])
    auroc = None
    if len(set(y[test_idx])) == 2:
        auroc = float(roc_auc_score(y[test_idx], model.predict_proba(encode(test, columns))[:, 1]))
    for c, w in zip(columns, model.coef_[0]):
        c["coef"] = float(w)

    import sklearn

    card = {
        "model": "logistic regression, 30-day readmission after an inpatient discharge",
        "training_set": training_hash,
        "timeline": train_set.attrs["timeline"],
        "entities": train_set.attrs["entities"],
        "feature_set": args.set,
        "online_feature_set": "readmission_online",
        "label": label,
        "entity_rows": "live inpatient discharges of the curated encounters, timestamp = discharge_time",
        "rows": int(len(data)),
        "positives": int(y.sum()),
        "split": {"method": "GroupShuffleSplit by patient_id", "seed": args.seed,
                  "test_size": args.test_size, "train_rows": int(len(train_idx)),
                  "test_rows": int(len(test_idx)), "test_positives": int(y[test_idx].sum())},
        "auroc_test": auroc,
        "intercept": float(model.intercept_[0]),
        "columns": columns,
        "score": "p = 1 / (1 + exp(-(intercept + sum(coef * (x - mean) / scale)))), "
                 "x = the number (missing: fill) or 1/0 for a one-hot value",
        "software": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__},
    }
    registered = None
    if not args.no_register:
        metrics = {"rows": len(data), "positives": int(y.sum()), "test_rows": int(len(test_idx))}
        if auroc is not None:
            metrics["auroc_test"] = auroc
        with Client(args.addr, token=args.token, tls=args.tls) as ward:
            registered = ward.register_model(
                args.name,
                training_hash,
                metrics=metrics,
                description=card["model"] + f"; label {label}, feature set {args.set}",
                owner=args.owner,
            )
        card["registered"] = {"name": registered.name, "card": registered.hash}
    with open(args.card, "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
    shown = "n/a (one class in the test split)" if auroc is None else f"{auroc:.3f}"
    print(
        f"training set {training_hash}: {len(data)} discharges, {int(y.sum())} readmitted within 30 days\n"
        f"logistic regression on {len(columns)} columns; held-out AUROC {shown} "
        f"({len(test_idx)} rows of {len(set(test['patient_id']))} patients)\n"
        f"model card: {args.card}"
        + (f"; registered in Ward as {registered.name} {registered.hash}" if registered else ""),
        file=sys.stderr,
    )
    print(training_hash)
    return 0


if __name__ == "__main__":
    sys.exit(main())
