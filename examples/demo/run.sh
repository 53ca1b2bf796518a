#!/usr/bin/env bash
# Builds the plugins and the quiver binary, then runs the demo pipelines on the bundled orders:
# a partitioned chain into Parquet files, and an ELT job into Delta tables.
set -euo pipefail
cd "$(dirname "$0")/../.."

./plugins/build.sh
cargo build --release -p quiver-cli
mkdir -p target/demo

echo
echo "== quiver plugin inspect mask"
target/release/quiver plugin inspect mask
echo
echo "== quiver run examples/demo/pipeline.toml"
target/release/quiver run examples/demo/pipeline.toml
echo
echo "== the same chain as a one-liner, to CSV"
target/release/quiver run -i examples/demo/orders.csv \
  --plugin filter -p 'where=amount >= 100 and country = "DE"' \
  --plugin mask -p columns=email -p salt=demo-salt \
  --plugin select -p 'keep=["order_id", "customer", "email", "amount"]' \
  -o target/demo/big-german-orders.csv --overwrite
head -n 6 target/demo/big-german-orders.csv
echo
echo "== quiver run examples/demo/elt.toml: land, then curate, into Delta tables"
rm -rf target/demo/lake examples/demo/.quiver
target/release/quiver run examples/demo/elt.toml
echo
echo "== the same job again: nothing new, so no commit"
target/release/quiver run examples/demo/elt.toml
echo
echo "== quiver table history target/demo/lake/orders"
target/release/quiver table history target/demo/lake/orders
echo
echo "== quiver runs examples/demo/elt.toml"
target/release/quiver runs examples/demo/elt.toml
echo
echo "output files:"
find target/demo -type f -not -path 'target/demo/lake/*' | sort
echo "Delta tables (readable by Spark, Python's deltalake, Polars, DuckDB):"
find target/demo/lake -maxdepth 1 -mindepth 1 -type d | sort
