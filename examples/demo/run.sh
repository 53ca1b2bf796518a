#!/usr/bin/env bash
# Builds the plugins and the quiver binary, then runs the demo pipeline on the bundled orders.
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
echo "output files:"
find target/demo -type f | sort
