#!/usr/bin/env bash
# The whole test suite: builds every plugin component from source (installing the
# wasm32-wasip2 target if needed), then runs the unit and end-to-end tests. One profile
# (release) is used for everything, so nothing is built twice.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
./plugins/build.sh
# Host, SDK and benchmark crates: unit tests and the end-to-end test binary.
cargo test --release -p quiver -p quiver-sdk -p quiver-bench
# Plugin crates are components (cdylib) that cannot link natively: test their libraries only.
cargo test --release -p quiver-plugin-filter -p quiver-plugin-select -p quiver-plugin-mask \
  -p quiver-plugin-scale --lib
