#!/usr/bin/env bash
# The whole test suite: builds every plugin component from source (installing the
# wasm32-wasip2 target if needed), then runs the unit and end-to-end tests. One profile
# (release) is used for everything, so nothing is built twice.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
./plugins/build.sh
cargo test --release --workspace
