#!/usr/bin/env bash
# Long fuzzing with cargo-fuzz (libFuzzer) of what must never panic or accept garbage:
#   plugin_output   validation and conversion of what a plugin returns (quiver::abi)
#   pipeline_file   the pipeline-file parser (quiver::pipeline)
#   untrusted_text  plugin names and error texts reaching paths and the terminal
#                   (quiver::untrusted)
#
#   runtime/fuzz/run.sh                   every target, 10 minutes each
#   runtime/fuzz/run.sh plugin_output 3600  one target for an hour
#
# Installs cargo-fuzz if it is missing. cargo-fuzz's sanitizer and build-std options need a
# nightly compiler (with -s none, as here, its flags are stable ones): the script uses the nightly
# toolchain if rustup has one installed (`rustup run nightly`, which never installs one), or else
# the default toolchain with RUSTC_BOOTSTRAP=1, as on a new machine, which has only stable.
# AddressSanitizer is off (-s none): the host code under test is safe Rust, and the
# checks that matter (no panic, nothing invalid accepted) are assertions in the targets.
# Findings go to runtime/fuzz/artifacts/<target>/; turn each into a regression test in
# tests/e2e/properties.rs.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup run nightly cargo --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

targets=("${1:-plugin_output}")
[ $# -eq 0 ] && targets=(plugin_output pipeline_file untrusted_text)
seconds=${2:-600}

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  cargo "${toolchain[@]}" fuzz run -s none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536
done
