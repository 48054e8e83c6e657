#!/usr/bin/env python3
"""A training set into pandas: over Arrow Flight from a running `ward serve` with the Python
client (`Client.dataset(hash).to_pandas()`, what a training job runs), against reading the
same rows from a local Parquet file with pyarrow (`pq.read_table(path).to_pandas()`).

    python3 benches/flight_pandas.py HOST:PORT REF PARQUET [REPEATS]

Alternates the two REPEATS times (default 5) and prints `key=value` lines: the median seconds
of each, rows, columns, and `ratio` (Flight time / Parquet time; issue 37's target is at
most 2). `cargo bench --bench serve` runs it after its Flight DoGet.
"""

import statistics
import sys
import time

import pyarrow.parquet as pq

from ward_client import Client


def main():
    addr, ref, path = sys.argv[1], sys.argv[2], sys.argv[3]
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    flight, local = [], []
    shape = None
    for _ in range(repeats):
        t = time.perf_counter()
        with Client(addr) as c:
            df = c.dataset(ref).to_pandas()
        flight.append(time.perf_counter() - t)
        shape = df.shape
        del df
        t = time.perf_counter()
        df = pq.read_table(path).to_pandas()
        local.append(time.perf_counter() - t)
        assert df.shape == shape, (df.shape, shape)
        del df
    f, p = statistics.median(flight), statistics.median(local)
    print(f"rows={shape[0]}")
    print(f"columns={shape[1]}")
    print(f"flight_s={f:.4f}")
    print(f"parquet_s={p:.4f}")
    print(f"flight_rows_per_s={shape[0] / f:.0f}")
    print(f"parquet_rows_per_s={shape[0] / p:.0f}")
    print(f"ratio={f / p:.3f}")


if __name__ == "__main__":
    main()
