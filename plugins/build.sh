#!/usr/bin/env bash
# Builds every plugin crate under plugins/, tests/plugins/, benches/plugins/ and examples/*/rust/ as a wasm32-wasip2 component and
# copies it to target/plugins/<name>.wasm. Installs the wasm32-wasip2 target if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

# SIMD lets the compiler vectorise the plugins' column loops; wasmtime supports it everywhere.
export CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C target-feature=+simd128"

names=()
args=()
for manifest in plugins/*/Cargo.toml tests/plugins/*/Cargo.toml benches/plugins/*/Cargo.toml examples/*/rust/Cargo.toml; do
  [ -f "$manifest" ] || continue
  pkg=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)
  names+=("$pkg")
  args+=(-p "$pkg")
done

cargo build --release --target wasm32-wasip2 "${args[@]}"

mkdir -p target/plugins
for pkg in "${names[@]}"; do
  short=${pkg#quiver-plugin-}
  short=${short#quiver-test-plugin-}
  short=${short#quiver-bench-}
  built="target/wasm32-wasip2/release/${pkg//-/_}.wasm"        # library components
  [ -f "$built" ] || built="target/wasm32-wasip2/release/${pkg}.wasm"  # command components
  cp "$built" "target/plugins/${short}.wasm"
done
echo "plugins built: ${names[*]} -> target/plugins/"
