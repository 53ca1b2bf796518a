#!/usr/bin/env bash
# The feature benchmark: the same fit → transform pipeline (impute → standard-scaler → one-hot →
# bucketize → feature-hasher) in Quiver, Polars and DuckDB on one generated Parquet file
# (ROWS, default 10M) on this machine's cores. Installs Polars and DuckDB from PyPI into a
# local virtualenv (target/bench-venv). Prints each median wall time and Quiver's ratio.
set -euo pipefail
cd "$(dirname "$0")/../.."

rows=${ROWS:-10000000}
runs=${RUNS:-3}
./plugins/build.sh
cargo build --release -p quiver-cli

venv=target/bench-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check polars duckdb pyarrow numpy

dir=target/bench-data/features
mkdir -p "$dir"
data="$dir/input-$rows.parquet"
[ -f "$data" ] || "$venv/bin/python" benches/features/gen_data.py "$data" "$rows"
export QUIVER_PLUGIN_PATH="$PWD/target/plugins"
"$venv/bin/python" benches/features/bench.py "$data" "$dir" target/release/quiver \
  benches/features/features.toml "$runs"
