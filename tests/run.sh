#!/usr/bin/env bash
# The whole test suite: builds every plugin component from source (installing the
# wasm32-wasip2 target if needed), then runs the unit and end-to-end tests. One profile
# (release) is used for everything, so nothing is built twice. Ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
./plugins/build.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
{
  # Plugin crates are components (cdylib) that cannot link natively: test their libraries.
  plugin_args=()
  for manifest in plugins/*/Cargo.toml; do
    plugin_args+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)")
  done
  cargo test --release "${plugin_args[@]}" --lib
  # Host, SDK and benchmark crates: unit tests and the end-to-end test binary.
  cargo test --release -p quiver -p quiver-sdk -p quiver-bench
} 2>&1 | tee "$log"

passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
