#!/usr/bin/env bash
# Tests of the C kit:
#   1. the template (placeholder replaced), tests/kit-check and examples/email-normalize/c
#      build with sdk/c/build.sh (copies in a temporary directory, so nothing is written to the
#      repository), and import nothing beyond quiver:plugin/*;
#   2. native unit tests of the kit (tests/kit_test.c, with the generated bindings);
#   3. each plugin's output on its sample input equals the expected output (via `quiver run`;
#      $QUIVER, default target/release/quiver; skipped if absent).
# Ends with "N passed, N failed"; exits non-zero on a failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sdk=$(dirname "$here")
root=$(cd "$sdk/../.." && pwd)
QUIVER=${QUIVER:-$root/target/release/quiver}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export QUIVER_CACHE_DIR=${QUIVER_CACHE_DIR:-$work/cache}
passed=0 failed=0 skipped=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

# Plugin copies: name, source dir, input, expected, params.
cp -r "$sdk/template" "$work/tpl"
sed -i 's/{{name}}/c-template-test/g' "$work/tpl/quiver-plugin.toml" "$work/tpl/plugin.c"
cp -r "$here/kit-check" "$work/kc"
mkdir -p "$work/email"
cp "$root/examples/email-normalize/c/quiver-plugin.toml" "$root/examples/email-normalize/c/"*.c "$work/email/"

build() { # dir name
    if bash "$sdk/build.sh" "$1" >"$work/build-$2.log" 2>&1 && [ -s "$1/build/$2.wasm" ]; then
        ok "build $2 ($(wc -c <"$1/build/$2.wasm") bytes)"
        if grep -q "warning" "$work/build-$2.log"; then bad "$2 imports WASI: $(grep warning "$work/build-$2.log")"; fi
    else
        bad "build $2"
        tail -20 "$work/build-$2.log"
    fi
}
build "$work/tpl" c-template-test
build "$work/kc" kit-check
build "$work/email" email-normalize

# Native unit tests, with the bindings the build generated.
cc=$(command -v cc || command -v gcc || command -v clang-19 || true)
gen=$work/kc/build/bindings
if [ -z "$cc" ]; then
    echo "skipped: native unit tests (no host C compiler)"
    skipped=$((skipped + 1))
elif [ ! -f "$gen/transform.h" ]; then
    bad "native unit tests: no generated bindings"
elif "$cc" -std=gnu17 -O1 -w -I "$sdk/kit" -I "$gen" "$here/kit_test.c" "$gen/transform.c" -lm \
    -o "$work/kit_test" 2>"$work/kit_test.log"; then
    out=$("$work/kit_test")
    echo "$out" | grep -v "^[0-9]* passed" || true
    line=$(echo "$out" | tail -1)
    p=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
    f=$(echo "$line" | sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
    # One test of many checks (the formatter alone is compared with libc 20,000 times).
    if [ -n "$p" ] && [ "${f:-1}" = 0 ]; then
        ok "native unit tests ($p checks)"
    else
        bad "native unit tests: $line"
    fi
else
    cat "$work/kit_test.log"
    bad "compile native unit tests"
fi

# Outputs through quiver.
compare() { # out expected
    python3 - "$1" "$2" <<'PY'
import json, sys
def rows(p):
    return [{k: v for k, v in json.loads(l).items() if v is not None} for l in open(p) if l.strip()]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
if a != b:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y: print(f"  row {i}: got {x}, expected {y}")
    if len(a) != len(b): print(f"  {len(a)} rows, expected {len(b)}")
    sys.exit(1)
PY
}
run() { # name wasm input expected params...
    local name=$1 wasm=$2 input=$3 expected=$4
    shift 4
    local args=()
    for p in "$@"; do args+=(-p "$p"); done
    if [ ! -s "$wasm" ]; then
        bad "run $name (not built)"
    elif "$QUIVER" run -i "$input" --plugin "$wasm" "${args[@]}" -o "$work/$name.out.jsonl" --overwrite \
        >"$work/$name.run.log" 2>&1 && compare "$work/$name.out.jsonl" "$expected"; then
        ok "run $name"
    else
        tail -5 "$work/$name.run.log"
        bad "run $name"
    fi
}
if [ -x "$QUIVER" ]; then
    run c-template-test "$work/tpl/build/c-template-test.wasm" "$sdk/template/tests/input.jsonl" \
        "$sdk/template/tests/expected.jsonl" column=x factor=2.5
    run kit-check "$work/kc/build/kit-check.wasm" "$here/kit-check/tests/input.jsonl" \
        "$here/kit-check/tests/expected.jsonl" threshold=1.5 'suffix=!' 'rename={ n = "name" }'
    run email-normalize "$work/email/build/email-normalize.wasm" \
        "$root/examples/email-normalize/input.jsonl" "$root/examples/email-normalize/expected.jsonl" column=email
else
    echo "skipped: quiver runs ($QUIVER not built)"
    skipped=$((skipped + 1))
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
