"""Generates the feature benchmark's input: a Parquet file of N rows (default 10M).

Columns: id (int64); f1..f4 (float64, 5% nulls each); cat (text, 50 categories with a skewed
frequency); amount (float64, for quantile buckets); hi (text, ~1M distinct values, for the
hashing trick). Deterministic for a given N.
"""

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main(path: str, rows: int) -> None:
    rng = np.random.default_rng(42)
    chunk = 1_000_000
    writer = None
    cats = np.array([f"cat{i:02d}" for i in range(50)])
    weights = 1.0 / np.arange(1, 51)
    weights /= weights.sum()
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
        gens = [
            lambda: rng.normal(10.0, 3.0, n),
            lambda: rng.lognormal(2.0, 1.0, n),
            lambda: rng.uniform(-5.0, 5.0, n),
            lambda: rng.normal(0.0, 1e6, n),
        ]
        for i, gen in enumerate(gens, start=1):
            values = gen()
            cols[f"f{i}"] = pa.array(values, mask=rng.random(n) < 0.05)
        cols["cat"] = pa.array(cats[rng.choice(50, size=n, p=weights)])
        cols["amount"] = pa.array(rng.exponential(100.0, n))
        cols["hi"] = pa.array(np.char.add("u", rng.integers(0, 1_000_000, n).astype(str)))
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=1_000_000)
    writer.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10_000_000)
