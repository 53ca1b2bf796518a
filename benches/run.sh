#!/usr/bin/env bash
# Runs every benchmark in one go and prints each figure next to its baseline as a ratio:
# the RisingWave arrow-udf-wasm peer (its own workspace, older wasmtime and arrow), then Quiver's
# benchmark program (plugin vs native, per-record ABI, the peer's figures, the whole pipeline).
# Extra arguments go to quiver-bench (e.g. --quick, --runs 3).
set -euo pipefail
cd "$(dirname "$0")/.."

./plugins/build.sh
# The streaming parts run the quiver binary next to quiver-bench.
cargo build --release -p quiver-bench -p quiver-cli
mkdir -p target/bench-data

peer=target/bench-data/peer.jsonl
peer_args=()
if benches/risingwave/run.sh > "$peer"; then
  peer_args=(--peer "$peer")
else
  echo "the peer benchmark failed (see above); continuing without its ratios" >&2
fi
target/release/quiver-bench "${peer_args[@]}" --json target/bench-data/quiver.json "$@"
