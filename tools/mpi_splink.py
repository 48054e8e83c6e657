#!/usr/bin/env python3
"""Splink (probabilistic Fellegi-Sunter linkage, DuckDB backend) on the patients Ward curated
from `ward synth --sources`, scored against the synth's truth file with the same pairwise
precision and recall as `ward mpi evaluate` (docs/mpi.md, "Measured").

Usage (Splink >= 4 installed outside the clone, e.g. in $HOME/.cache/ward-py):

    ward --store S export patients patients.parquet
    $HOME/.cache/ward-py/bin/python tools/mpi_splink.py patients.parquet SRC/truth.csv

Each source record is its latest `patients` version (by known_at). Names are lower-cased
(no nickname table: Splink compares strings); a `sex` of `unknown` is missing.
"""

import csv
import sys
import time
from collections import Counter, defaultdict

import duckdb
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    patients, truth_path = sys.argv[1], sys.argv[2]
    threshold = float(sys.argv[3]) if len(sys.argv) > 3 else 0.95
    con = duckdb.connect()
    con.execute(
        f"""
        create table records as
        select patient_id as unique_id,
               lower(given_name) as first_name,
               lower(family_name) as surname,
               strftime(birth_date, '%Y-%m-%d') as dob,
               nullif(sex, 'unknown') as sex,
               zip
        from (
            select *, row_number() over (partition by patient_id order by known_at desc) as n
            from read_parquet('{patients}')
        ) where n = 1
        """
    )
    db_api = DuckDBAPI(connection=con)
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.ExactMatch("sex"),
            cl.ExactMatch("zip").configure(term_frequency_adjustments=True),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("first_name", "surname"),
            block_on("dob"),
            block_on("surname", "zip"),
            block_on("first_name", "zip"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    started = time.time()
    df = db_api.register("records")
    linker = Linker(df, settings)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname", "dob")], recall=0.8
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(
        block_on("first_name", "surname")
    )
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold
    )
    found = {r["unique_id"]: r["cluster_id"] for r in clusters.as_record_list()}
    elapsed = time.time() - started

    truth = {}
    with open(truth_path, newline="") as f:
        for row in csv.DictReader(f):
            truth[row["record_id"]] = row["person_id"]
    cells = Counter()
    per_person = Counter()
    per_cluster = Counter()
    for record, person in truth.items():
        cluster = found.get(record, record)
        cells[(person, cluster)] += 1
        per_person[person] += 1
        per_cluster[cluster] += 1

    def pairs(n):
        return n * (n - 1) // 2

    true_pairs = sum(pairs(n) for n in cells.values())
    linked = sum(pairs(n) for n in per_cluster.values())
    same = sum(pairs(n) for n in per_person.values())
    precision = true_pairs / linked if linked else 1.0
    recall = true_pairs / same if same else 1.0
    print(
        f"splink: records {len(truth)}  pairs linked right {true_pairs}  "
        f"wrong {linked - true_pairs}  missed {same - true_pairs}"
    )
    print(f"splink: precision {precision:.5f}  recall {recall:.5f}  "
          f"(threshold {threshold}, {elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
