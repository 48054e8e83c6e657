#!/usr/bin/env python3
"""The 10 readmission features at (patient, t) rows in DuckDB SQL, as a user would write it.

    python3 benches/features_duckdb.py CURATED_DIR ENTITIES.parquet OUT.parquet

Run by `cargo bench --bench features` (benches/features.rs), which compares its output with
Ward's row by row. CURATED_DIR holds Ward's curated layout as Parquet (`ward synth --format
parquet`): patients, encounters, observations. ENTITIES has `row_id`, `patient_id`, `ts`.

The as-known-at rule (DESIGN.md, "Point-in-time semantics"): a row counts at t when
event_time <= t, known_at <= t and (retracted_at IS NULL OR retracted_at > t); windows are
(t - w, t]; `last` values are outside their 365-day TTL when t - event_time >= 365 days; ties
on the event time go to the greater known_at, then source_id. The query is one statement: a
range join of the entity rows with each table, aggregated per entity row (an ASOF JOIN cannot
express known_at and retraction, so it is not used).

Prints `total=SECONDS peak=BYTES` (peak: this process's VmHWM, DuckDB runs in-process) as the
last line of standard output.
"""

import sys
import time

import duckdb

QUERY = """
COPY (
WITH entities AS (
    SELECT row_id, patient_id, ts FROM read_parquet('{entities}')
),
labs AS (
    SELECT patient_id, code, effective_time, known_at, retracted_at, source_id, value_num
    FROM read_parquet('{data}/observations.parquet')
    WHERE code_system = 'LOINC' AND code IN ('718-7', '2951-2', '2160-0')
      AND value_num IS NOT NULL
),
lab_last AS (
    SELECT e.row_id,
        arg_max(l.value_num, (l.effective_time, l.known_at, l.source_id))
            FILTER (WHERE l.code = '718-7') AS hgb,
        max(l.effective_time) FILTER (WHERE l.code = '718-7') AS hgb_time,
        arg_max(l.value_num, (l.effective_time, l.known_at, l.source_id))
            FILTER (WHERE l.code = '2951-2') AS sodium,
        max(l.effective_time) FILTER (WHERE l.code = '2951-2') AS sodium_time,
        arg_max(l.value_num, (l.effective_time, l.known_at, l.source_id))
            FILTER (WHERE l.code = '2160-0') AS creat,
        max(l.effective_time) FILTER (WHERE l.code = '2160-0') AS creat_time
    FROM entities e
    JOIN labs l
      ON l.patient_id = e.patient_id
     AND l.effective_time <= e.ts
     AND l.known_at <= e.ts
     AND (l.retracted_at IS NULL OR l.retracted_at > e.ts)
    GROUP BY e.row_id
),
enc AS (
    SELECT patient_id, class, admit_time, discharge_time, known_at, retracted_at, source_id
    FROM read_parquet('{data}/encounters.parquet')
    WHERE class IN ('inpatient', 'emergency')
),
enc_agg AS (
    SELECT e.row_id,
        count(*) FILTER (WHERE c.class = 'inpatient'
                           AND c.admit_time > e.ts - INTERVAL 180 DAY) AS admissions_180d,
        count(*) FILTER (WHERE c.class = 'inpatient'
                           AND c.admit_time > e.ts - INTERVAL 365 DAY) AS admissions_365d,
        count(*) FILTER (WHERE c.class = 'emergency'
                           AND c.admit_time > e.ts - INTERVAL 180 DAY) AS ed_visits_180d,
        count(*) FILTER (WHERE c.class = 'emergency'
                           AND c.admit_time > e.ts - INTERVAL 365 DAY) AS ed_visits_365d,
        -- inpatient stays: the discharge is the event (it must have happened by t)
        max(c.discharge_time) FILTER (WHERE c.class = 'inpatient'
                                        AND c.discharge_time <= e.ts) AS last_discharge,
        arg_max(epoch_us(c.discharge_time) - epoch_us(c.admit_time),
                (c.discharge_time, c.known_at, c.source_id))
            FILTER (WHERE c.class = 'inpatient' AND c.discharge_time <= e.ts) AS last_los_us
    FROM entities e
    JOIN enc c
      ON c.patient_id = e.patient_id
     AND c.admit_time <= e.ts
     AND c.known_at <= e.ts
     AND (c.retracted_at IS NULL OR c.retracted_at > e.ts)
    GROUP BY e.row_id
),
demo AS (
    SELECT e.row_id, arg_max(p.birth_date, (p.known_at, p.source_id)) AS birth_date
    FROM entities e
    JOIN read_parquet('{data}/patients.parquet') p
      ON p.patient_id = e.patient_id
     AND p.known_at <= e.ts
     AND (p.retracted_at IS NULL OR p.retracted_at > e.ts)
     AND p.birth_date IS NOT NULL
    GROUP BY e.row_id
)
SELECT e.row_id,
    CASE WHEN d.birth_date <= e.ts THEN
        year(e.ts) - year(d.birth_date)
        - CASE WHEN month(e.ts) * 100 + day(e.ts) < month(d.birth_date) * 100 + day(d.birth_date)
               THEN 1 ELSE 0 END
    END::DOUBLE AS age,
    (epoch_us(e.ts) - epoch_us(a.last_discharge))::DOUBLE / 86400000000.0
        AS days_since_discharge,
    coalesce(a.admissions_180d, 0)::DOUBLE AS admissions_180d,
    coalesce(a.admissions_365d, 0)::DOUBLE AS admissions_365d,
    coalesce(a.ed_visits_180d, 0)::DOUBLE AS ed_visits_180d,
    coalesce(a.ed_visits_365d, 0)::DOUBLE AS ed_visits_365d,
    CASE WHEN a.last_discharge > e.ts - INTERVAL 365 DAY
         THEN a.last_los_us::DOUBLE / 86400000000.0 END AS los_last_stay_days,
    CASE WHEN l.hgb_time > e.ts - INTERVAL 365 DAY THEN l.hgb END AS hemoglobin_last,
    CASE WHEN l.sodium_time > e.ts - INTERVAL 365 DAY THEN l.sodium END AS sodium_last,
    CASE WHEN l.creat_time > e.ts - INTERVAL 365 DAY THEN l.creat END AS creatinine_last
FROM entities e
LEFT JOIN demo d USING (row_id)
LEFT JOIN enc_agg a USING (row_id)
LEFT JOIN lab_last l USING (row_id)
ORDER BY e.row_id
) TO '{out}' (FORMAT parquet)
"""


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    data, entities, out = sys.argv[1:4]
    t0 = time.perf_counter()
    con = duckdb.connect()
    # Windows of whole days in UTC, as Ward counts them (no daylight-saving shifts).
    con.execute("SET TimeZone = 'UTC'")
    con.execute(QUERY.format(data=data, entities=entities, out=out))
    total = time.perf_counter() - t0
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    print(f"duckdb {duckdb.__version__}, threads {threads}")
    print(f"total={total} peak={peak_rss()}")


if __name__ == "__main__":
    main()
