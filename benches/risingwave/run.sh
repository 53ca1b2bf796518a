#!/usr/bin/env bash
# Peer benchmark: RisingWave arrow-udf-wasm 0.5.1 (host) + arrow-udf 0.6.2
# (guest, wasm32-wasip1). Separate cargo workspace; excluded from Quiver's.
#
# Prints one JSON object per line on stdout; notes go to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/risingwave}"
# Quiver's plugins are built with simd128; give the guest the same.
export CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="${CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS:--C target-feature=+simd128}"

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
    rustup target add wasm32-wasip1 >&2
fi

cd "$here"
echo "building guest (wasm32-wasip1, release, RUSTFLAGS='$CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS')" >&2
cargo build --locked --release --target wasm32-wasip1 -p rw-guest >&2
echo "building host (release)" >&2
cargo build --locked --release -p rw-bench >&2

wasm="$CARGO_TARGET_DIR/wasm32-wasip1/release/rw_guest.wasm"
"$CARGO_TARGET_DIR/release/rw-bench" "$wasm"
