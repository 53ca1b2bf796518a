"""The feature benchmark: the same fit → transform pipeline in Quiver, Polars and DuckDB.

impute (mean) f1..f4 → standard-scale f1..f4 (fitted after imputation, population std) →
one-hot cat (~50 categories, 0/1 columns, cat dropped) → bucketize amount into 10 quantile
bins (linear-interpolated deciles, bucket = number of boundaries <= x) → hash hi into 16
signed columns. Parquet in, Parquet (Snappy) out, fit included, same input file, same 2 cores.

Usage: bench.py INPUT.parquet OUTDIR QUIVER_BINARY PIPELINE.toml [RUNS]
Prints each system's median wall time and Quiver's ratio to the faster of the other two.
"""

import statistics
import subprocess
import sys
import time

import duckdb
import polars as pl

F = ["f1", "f2", "f3", "f4"]
DECILES = [q / 10 for q in range(1, 10)]
N_HASH = 16


def run_polars(inp: str, out: str) -> None:
    df = pl.read_parquet(inp)
    means = df.select([pl.col(c).mean() for c in F]).row(0)
    imputed = [pl.col(c).fill_null(m) for c, m in zip(F, means)]
    stats = df.select(
        [e.mean().alias(f"{c}_mean") for c, e in zip(F, imputed)]
        + [e.std(ddof=0).alias(f"{c}_std") for c, e in zip(F, imputed)]
        + [pl.col("amount").quantile(q, interpolation="linear").alias(f"q{q}") for q in DECILES]
    ).row(0, named=True)
    cats = sorted(df["cat"].unique().drop_nulls().to_list())
    bounds = [stats[f"q{q}"] for q in DECILES]
    h = pl.col("hi").hash(seed=0)
    idx = (h % N_HASH).cast(pl.Int32)
    sign = pl.when(h >= 2**63).then(-1.0).otherwise(1.0)
    exprs = [pl.col("id")]
    exprs += [((e - stats[f"{c}_mean"]) / (stats[f"{c}_std"] or 1.0)).alias(c) for c, e in zip(F, imputed)]
    exprs += [(pl.col("cat") == v).alias(f"cat={v}") for v in cats]
    exprs += [pl.sum_horizontal([(pl.col("amount") >= b).cast(pl.Int32) for b in bounds]).alias("amount")]
    exprs += [pl.when(idx == j).then(sign).otherwise(0.0).alias(f"hash_{j}") for j in range(N_HASH)]
    df.select(exprs).write_parquet(out, compression="snappy")


def run_duckdb(inp: str, out: str) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TEMP TABLE t AS SELECT * FROM read_parquet('{inp}')")
    means = con.execute("SELECT " + ", ".join(f"avg({c})" for c in F) + " FROM t").fetchone()
    imputed = {c: f"coalesce({c}, {m!r})" for c, m in zip(F, means)}
    stats = con.execute(
        "SELECT "
        + ", ".join(f"avg({e}), stddev_pop({e})" for e in imputed.values())
        + f", quantile_cont(amount, {DECILES}) FROM t"
    ).fetchone()
    cats = [r[0] for r in con.execute("SELECT DISTINCT cat FROM t WHERE cat IS NOT NULL ORDER BY cat").fetchall()]
    bounds = list(stats[-1])
    cols = ["id"]
    for i, c in enumerate(F):
        mean, std = stats[2 * i], stats[2 * i + 1] or 1.0
        cols.append(f"({imputed[c]} - {mean!r}) / {std!r} AS {c}")
    cols += [f"(cat = '{v}') AS \"cat={v}\"" for v in cats]
    cols.append(f"len(list_filter({bounds}::DOUBLE[], lambda b: b <= amount))::INTEGER AS amount")
    cols += [
        f"CASE WHEN hash(hi) % {N_HASH} = {j} THEN (CASE WHEN hash(hi) >= 9223372036854775808 THEN -1.0 ELSE 1.0 END) ELSE 0.0 END AS hash_{j}"
        for j in range(N_HASH)
    ]
    con.execute(f"COPY (SELECT {', '.join(cols)} FROM t) TO '{out}' (FORMAT parquet, COMPRESSION snappy)")


def check_same(quiver_out: str, polars_out: str) -> None:
    """Checks that Quiver computed what Polars computed (hash columns use different hash
    functions, and quantile buckets an approximate sketch past 100k values, so those are
    compared by their invariants)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    q, p = pq.read_table(quiver_out), pq.read_table(polars_out)
    assert q.num_rows == p.num_rows, (q.num_rows, p.num_rows)
    q = q.sort_by("id")
    for c in F:
        a, b = q[c].to_numpy(), p[c].to_numpy()
        assert abs(a - b).max() <= 1e-9 * max(1.0, abs(b).max()), c
    onehot = [n for n in p.column_names if n.startswith("cat=")]
    assert sorted(onehot) == sorted(n for n in q.column_names if n.startswith("cat="))
    for n in onehot:
        assert pc.sum(q[n].cast("int64")).as_py() == pc.sum(p[n].cast("int64")).as_py(), n
    same = pc.sum(pc.equal(q["amount"], p["amount"]).cast("int64")).as_py() / q.num_rows
    assert same > 0.99, f"only {same:.4f} of the buckets agree"
    for t in (q, p):
        nonzero = sum((t[f"hash_{j}"].to_numpy() != 0.0).astype(int) for j in range(N_HASH))
        assert (nonzero == 1).all(), "every row hashes to exactly one feature"
    print(f"outputs agree: scaled columns within 1e-9, one-hot counts equal, {same:.2%} of buckets equal")


def timed(label: str, runs: int, f) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"{label:<8} median {median:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    return median


def main() -> None:
    inp, outdir, quiver, pipeline = sys.argv[1:5]
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    quiver_cmd = [quiver, "run", pipeline, "-i", inp, "-o", f"{outdir}/quiver.parquet", "--overwrite", "-w", "2"]
    print("quiver command: " + " ".join(quiver_cmd), flush=True)
    q = timed("quiver", runs, lambda: subprocess.run(quiver_cmd, check=True, stderr=subprocess.DEVNULL))
    p = timed("polars", runs, lambda: run_polars(inp, f"{outdir}/polars.parquet"))
    d = timed("duckdb", runs, lambda: run_duckdb(inp, f"{outdir}/duckdb.parquet"))
    check_same(f"{outdir}/quiver.parquet", f"{outdir}/polars.parquet")
    best = min(p, d)
    print(f"quiver / polars = {q / p:.2f}, quiver / duckdb = {d and q / d:.2f}; "
          f"quiver / faster = {q / best:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
