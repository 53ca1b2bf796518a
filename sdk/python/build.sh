#!/usr/bin/env bash
# Builds the Python plugin in DIR into DIR/build/<name>.wasm with componentize-py.
#
#   sdk/python/build.sh DIR
#
# Environment (all optional):
#   QUIVER_KIT_DIR    the kit (quiver.py); default: kit/ next to this script
#   QUIVER_WIT_DIR    the WIT package;      default: ../../wit from this script
#   QUIVER_TOOLS_DIR  where tools go;       default: ~/.cache/quiver/tools
#                     (componentize-py is installed once into <tools>/python/)
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

die() {
    echo "build.sh: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: build.sh PLUGIN_DIR"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(cd "$1" 2>/dev/null && pwd)" || die "no such directory: $1"
kit="${QUIVER_KIT_DIR:-$here/kit}"
wit="${QUIVER_WIT_DIR:-$here/../../wit}"
tools="${QUIVER_TOOLS_DIR:-$HOME/.cache/quiver/tools}/python"

manifest="$dir/quiver-plugin.toml"
[ -f "$manifest" ] || die "$manifest not found; is $dir a plugin directory?"
[ -f "$dir/app.py" ] || die "$dir/app.py not found: a Python plugin's source is app.py"
[ -f "$kit/quiver.py" ] || die "the kit is missing: $kit/quiver.py (set QUIVER_KIT_DIR)"
[ -d "$wit" ] || die "the WIT package is missing: $wit (set QUIVER_WIT_DIR)"

# `name = "…"` before the first [table] of the manifest.
name="$(awk '/^[[:space:]]*\[/ { exit }
    /^[[:space:]]*name[[:space:]]*=/ {
        sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit }' "$manifest")"
[ -n "$name" ] || die "$manifest has no name = \"…\""
case "$name" in
    *[!a-z0-9-]* | -* | *-) die "\`$name\` is not a plugin name (lowercase letters, digits, dashes)" ;;
esac

# --- componentize-py, once, into a venv under the tools dir ---------------------------------
venv="$tools/componentize-py-$COMPONENTIZE_PY_VERSION"
cpy="$venv/bin/componentize-py"
if ! "$cpy" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    command -v python3 >/dev/null || die "python3 is missing: install Python 3.9 or later (Debian: apt-get install python3)"
    echo "build.sh: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv (once)" >&2
    rm -rf "$venv"
    mkdir -p "$tools"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        # Debian's python3 ships venv without ensurepip: make the venv without pip and install
        # with the system's pip, or get python3-venv.
        rm -rf "$venv"
        if python3 -m venv --without-pip "$venv" >/dev/null 2>&1 &&
            python3 -m pip --version >/dev/null 2>&1; then
            pip_cmd=(python3 -m pip --python "$venv/bin/python")
        elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
            rm -rf "$venv"
            echo "build.sh: installing python3-venv with apt-get" >&2
            { apt-get install -y python3-venv >&2 ||
                { apt-get update >&2 && apt-get install -y python3-venv >&2; }; } ||
                die "could not install python3-venv (needed for a venv with pip)"
            python3 -m venv "$venv" || die "python3 -m venv failed"
        else
            die "python3 cannot make a venv with pip: install python3-venv (Debian: apt-get install python3-venv)"
        fi
    fi
    [ -n "${pip_cmd+x}" ] || pip_cmd=("$venv/bin/python" -m pip)
    "${pip_cmd[@]}" install --disable-pip-version-check -q "componentize-py==$COMPONENTIZE_PY_VERSION" >&2 ||
        die "pip could not install componentize-py==$COMPONENTIZE_PY_VERSION (is PyPI reachable?)"
    "$cpy" --version >/dev/null 2>&1 || die "componentize-py was installed but does not run: $cpy"
    echo "build.sh: installed $("$cpy" --version)" >&2
fi

# --- build ----------------------------------------------------------------------------------
mkdir -p "$dir/build"
out="$dir/build/$name.wasm"
tmp="$out.tmp.$$"

# componentize-py falls back to the site-packages of whichever Python runs it; point it at
# nothing but the plugin and the kit. --stub-wasi replaces every WASI import with a trapping
# stub, so the component imports nothing but quiver:plugin/host (no files, clocks, random or
# sockets); the kit sends stdout and stderr to the host's log instead.
echo "build.sh: building $out" >&2
log="$out.log.$$"
trap 'rm -f "$tmp" "$log"' EXIT
if ! (
    cd "$dir"
    unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
    export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0
    "$cpy" -q -d "$wit" -w transform componentize --stub-wasi \
        -p "$dir" -p "$kit" app -o "$tmp"
) >"$log" 2>&1; then
    # componentize-py imports app.py to snapshot it: a Python error there is a build error.
    # Its message, without the tool's own stack trace.
    sed -e '/^Stack backtrace:/,$d' -e '/^Traceback (most recent call last):$/,/^AssertionError: /{/^AssertionError: /!d;s/^AssertionError: //}' "$log" >&2
    if grep -q "has no attribute 'Transformer'" "$log"; then
        echo "build.sh: app.py must export its plugin: Transformer = quiver.export(MyPlugin)" >&2
    fi
    die "componentize-py could not build $dir/app.py (message above)"
fi
cat "$log" >&2
mv -f "$tmp" "$out"
rm -f "$log"
trap - EXIT
echo "$out"
