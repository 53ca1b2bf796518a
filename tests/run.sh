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
  cargo test --release -p quiver-cli -p quiver -p quiver-durable -p quiver-checkpoint -p quiver-schedule -p quiver-coordination -p quiver-transport -p quiver-replication -p quiver-node -p quiver-worker \
    -p quiver-data -p quiver-lake -p quiver-plugin-host -p quiver-exec -p quiver-stream -p quiver-authoring -p quiver-sdk -p quiver-bench
  # The JavaScript kit's own tests (node's test runner, against a stand-in host).
  node --import ./sdk/js/tests/register.mjs --test sdk/js/tests/
  # The Python kit's own tests, on the componentize-py the end-to-end tests installed.
  QUIVER_TOOLS_DIR=target/authoring-tools python3 -m unittest discover -s sdk/python/tests -v
  # The C kit's own tests (native unit tests of the kit, and its check plugin), on the tools
  # the end-to-end tests installed.
  QUIVER_TOOLS_DIR=target/authoring-tools sdk/c/tests/run.sh
} 2>&1 | tee "$log"

cargo_passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
cargo_failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
node_passed=$(grep -E '^# pass [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')
node_failed=$(grep -E '^# fail [0-9]+' "$log" | awk '{s += $3} END {print s + 0}')
py_passed=$(grep -cE '^test[a-z_0-9]* \(.*\) \.\.\. ok$' "$log" || true)
py_failed=$(grep -cE '^test[a-z_0-9]* \(.*\) \.\.\. (FAIL|ERROR)$' "$log" || true)
c_passed=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | awk '{s += $1} END {print s + 0}')
c_failed=$(grep -E '^[0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$log" | awk '{s += $3} END {print s + 0}')
passed=$((cargo_passed + node_passed + py_passed + c_passed))
failed=$((cargo_failed + node_failed + py_failed + c_failed))

# The demo builds the binary alone (examples/demo/run.sh). That must be the very build the tests
# just made, or a newcomer who runs both waits for a second wasmtime and arrow: the dependency
# features that runtime/cli/Cargo.toml asks for keep the two the same.
rebuilt=$(cargo build --release -p quiver-cli --message-format=json 2>/dev/null | python3 -c '
import json, sys
print(" ".join(m["target"]["name"] for m in map(json.loads, sys.stdin)
               if m.get("reason") == "compiler-artifact" and not m["fresh"]))')
if [ -n "$rebuilt" ]; then
  echo "the demo's build (cargo build --release -p quiver-cli) rebuilt what the tests had built: $rebuilt"
  echo "  a dev-dependency turns on features the binary's own build lacks; add them to runtime/cli/Cargo.toml"
  failed=$((failed + 1))
else
  passed=$((passed + 1))
fi
echo
echo "tests: ${passed} passed, ${failed} failed"
