#!/usr/bin/env bash
# Builds the JavaScript plugin in DIR into DIR/build/<name>.wasm with ComponentizeJS.
#
#   sdk/js/build.sh DIR
#
# DIR holds quiver-plugin.toml (name = "…", lang = "js") and plugin.js, an ES module exporting
# `transformer` (see sdk/js/README.md). The kit (quiver.js) is copied next to the plugin's
# sources in DIR/build/js-src/, so plugin.js imports it as './quiver.js'.
#
# Environment:
#   QUIVER_KIT_DIR    the kit (default: <this script's dir>/kit)
#   QUIVER_WIT_DIR    the WIT package (default: <this script's dir>/../../wit)
#   QUIVER_TOOLS_DIR  where tools are installed, once (default: ~/.cache/quiver/tools); this
#                     script uses <tools>/js/ (npm --prefix)
#   QUIVER_JS_FORCE=1 rebuild even if nothing changed
set -euo pipefail

CJS_VERSION=0.23.0
# Features of the ComponentizeJS engine left out, so the component imports no WASI at all:
# stdio (console goes to the host log instead), random (Math.random and crypto are
# deterministic), clocks (Date.now() is the build time, timers cannot be used), http, fetch-event.
DISABLED_FEATURES=(stdio random clocks http fetch-event)

die() {
  echo "build.sh: error: $*" >&2
  exit 1
}

[ $# -eq 1 ] || die "usage: build.sh DIR (a plugin directory holding quiver-plugin.toml and plugin.js)"
[ -d "$1" ] || die "no such directory: $1"
DIR=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KIT=${QUIVER_KIT_DIR:-$HERE/kit}
WIT=${QUIVER_WIT_DIR:-$HERE/../../wit}
TOOLS=${QUIVER_TOOLS_DIR:-$HOME/.cache/quiver/tools}/js

[ -f "$KIT/quiver.js" ] || die "the kit is missing: no $KIT/quiver.js (set QUIVER_KIT_DIR)"
[ -d "$WIT" ] || die "the WIT package is missing: no directory $WIT (set QUIVER_WIT_DIR)"
WIT=$(cd "$WIT" && pwd)
[ -f "$DIR/quiver-plugin.toml" ] || die "$DIR has no quiver-plugin.toml"
[ -f "$DIR/plugin.js" ] || die "$DIR has no plugin.js (the plugin's ES module)"

# --- the manifest: top-level `name` and `lang` (before any [section])
toml_key() {
  awk -v key="$1" '
    /^[[:space:]]*\[/ { exit }
    $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*/, "")
      if (match($0, /^"[^"]*"/) || match($0, /^'\''[^'\'']*'\''/)) print substr($0, 2, RLENGTH - 2)
      exit
    }' "$DIR/quiver-plugin.toml"
}
NAME=$(toml_key name)
LANG_=$(toml_key lang)
[ -n "$NAME" ] || die "quiver-plugin.toml has no name = \"…\""
[ "$NAME" != "{{name}}" ] || die "quiver-plugin.toml still has the template's {{name}} placeholder"
[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "plugin name \`$NAME\` must be letters, digits, '.', '_' or '-'"
[ -z "$LANG_" ] || [ "$LANG_" = js ] || die "quiver-plugin.toml says lang = \"$LANG_\"; this script builds lang = \"js\""

# --- tools: node, npm, and ComponentizeJS (installed once under $TOOLS)
command -v node >/dev/null 2>&1 || die "node is not installed (Node.js 18 or later is needed: apt-get install nodejs npm)"
NODE_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$NODE_MAJOR" -ge 18 ] || die "node $(node --version) is too old: Node.js 18 or later is needed"

CJS_DIR=$TOOLS/node_modules/@bytecodealliance/componentize-js
CJS_OK=$TOOLS/.componentize-js-$CJS_VERSION.ok
install_tools() {
  command -v npm >/dev/null 2>&1 || die "npm is not installed (needed once to install @bytecodealliance/componentize-js: apt-get install npm)"
  mkdir -p "$TOOLS"
  echo "build.sh: installing @bytecodealliance/componentize-js@$CJS_VERSION into $TOOLS (once; ~400 MB)" >&2
  local start=$SECONDS
  if ! npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$CJS_VERSION" >&2; then
    die "npm install @bytecodealliance/componentize-js@$CJS_VERSION failed (is the npm registry reachable?)"
  fi
  [ -f "$CJS_DIR/src/cli.js" ] || die "componentize-js is not where npm should have put it ($CJS_DIR)"
  touch "$CJS_OK"
  echo "build.sh: installed componentize-js $CJS_VERSION ($(node -p "require('$TOOLS/node_modules/@bytecodealliance/jco/package.json').version" 2>/dev/null || echo '?') jco) in $((SECONDS - start))s" >&2
}
if [ ! -f "$CJS_OK" ]; then
  mkdir -p "$TOOLS"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.install.lock"
    flock 9
  fi
  [ -f "$CJS_OK" ] || install_tools
  if command -v flock >/dev/null 2>&1; then flock -u 9; fi
fi

# --- stage the sources: the plugin's .js/.mjs files (not build/, tests/, node_modules/) + the kit
OUT_DIR=$DIR/build
STAGE=$OUT_DIR/js-src
OUT=$OUT_DIR/$NAME.wasm
mkdir -p "$OUT_DIR"
rm -rf "$STAGE"
mkdir -p "$STAGE"
(cd "$DIR" && find . \( -path ./build -o -path ./tests -o -path ./node_modules -o -name '.*' ! -name . \) -prune \
  -o -type f \( -name '*.js' -o -name '*.mjs' \) -print) | while IFS= read -r f; do
  mkdir -p "$STAGE/$(dirname "$f")"
  cp "$DIR/$f" "$STAGE/$f"
done
[ ! -f "$DIR/quiver.js" ] || echo "build.sh: note: $DIR/quiver.js is replaced by the kit's quiver.js" >&2
cp "$KIT/quiver.js" "$STAGE/quiver.js"
echo '{ "type": "module" }' >"$STAGE/package.json"

# Nothing changed since the last build: done.
STAMP_FILE=$OUT_DIR/.js-build-stamp
STAMP=$( (echo "componentize-js $CJS_VERSION ${DISABLED_FEATURES[*]} $NAME"
  cd "$STAGE" && find . -type f -print0 | sort -z | xargs -0 sha256sum
  cd "$WIT" && find . -type f -name '*.wit' -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)
if [ "${QUIVER_JS_FORCE:-}" != 1 ] && [ -f "$OUT" ] && [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$STAMP" ]; then
  echo "build.sh: $OUT is up to date" >&2
  echo "$OUT"
  exit 0
fi

# A syntax error is found in a second by node, rather than after the whole build.
while IFS= read -r f; do
  node --check "$STAGE/$f" >/dev/null 2>"$OUT_DIR/.check.err" || {
    sed "s#$STAGE/##g" "$OUT_DIR/.check.err" >&2
    rm -f "$OUT_DIR/.check.err"
    die "syntax error in $f"
  }
done < <(cd "$STAGE" && find . -type f \( -name '*.js' -o -name '*.mjs' \) ! -name quiver.js | sed 's#^\./##')
rm -f "$OUT_DIR/.check.err"

# --- componentize (from inside the staging directory, so relative imports resolve)
echo "build.sh: building $NAME with componentize-js $CJS_VERSION" >&2
start=$SECONDS
TMP_OUT=$OUT_DIR/.$NAME.wasm.tmp
rm -f "$TMP_OUT"
if ! (cd "$STAGE" && node "$CJS_DIR/src/cli.js" plugin.js \
  --wit "$WIT" --world-name transform \
  --disable "${DISABLED_FEATURES[@]}" \
  --out "$TMP_OUT" >&2); then
  rm -f "$TMP_OUT"
  die "componentize-js failed for $DIR/plugin.js (see above)"
fi
[ -s "$TMP_OUT" ] || die "componentize-js made no component"

# --- check what the component imports: only quiver:plugin interfaces are expected
if WORLD=$(node "$TOOLS/node_modules/@bytecodealliance/jco/dist/jco.js" wit "$TMP_OUT" 2>/dev/null); then
  IMPORTS=$(printf '%s\n' "$WORLD" | sed -n 's/^[[:space:]]*import[[:space:]]\{1,\}\([^;]*\);.*/\1/p' | tr '\n' ' ')
  for i in $IMPORTS; do
    case "$i" in
      quiver:plugin/* | wasi:io/* | wasi:cli/* | wasi:random/insecure-seed*) ;;
      *)
        rm -f "$TMP_OUT"
        die "the component imports $i, which Quiver does not grant by default"
        ;;
    esac
  done
  echo "build.sh: imports: ${IMPORTS:-none}" >&2
fi

mv -f "$TMP_OUT" "$OUT"
echo "$STAMP" >"$STAMP_FILE"
echo "build.sh: built $OUT ($(($(wc -c <"$OUT") / 1024)) KiB) in $((SECONDS - start))s" >&2
echo "$OUT"
