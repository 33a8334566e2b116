#!/usr/bin/env bash
# Builds the plugins written in other languages than Rust as WASM components of the jobber
# world (sdk/wit/): plugins/ticket-price (Python, componentize-py) and plugins/booking
# (JavaScript, componentize-js), to $CARGO_TARGET_DIR/plugins/<profile>/ (default
# target/plugins/debug/) as ticket-price.wasm and booking.wasm, beside what
# scripts/build-plugins.sh builds.
#
# The tools are pinned and project-local, never global: componentize-py in a venv under
# $CARGO_TARGET_DIR/tools/venv, componentize-js in plugins/booking/node_modules from its
# package-lock.json (`npm ci`). Needs python3 (with venv) and node with npm. Each step is
# skipped when its inputs (sources, sdk/wit, tool version) are unchanged since it last ran,
# so a second run takes well under a second. Both profiles build the same components; the
# profile only chooses the output folder. Usage: scripts/build-guest-langs.sh [debug|release]
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTIZE_PY_VERSION=0.25.1

profile="${1:-debug}"
case "$profile" in
    debug | release) ;;
    *) echo "usage: $0 [debug|release]" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/plugins/$profile"
venv="$target_dir/tools/venv"
mkdir -p "$out"

need() { command -v "$1" >/dev/null || { echo "$0: $1 is missing; $2" >&2; exit 1; }; }
need python3 "install Python 3.9 or later (with its venv module)"
need node "install Node.js 20 or later"
need npm "install npm (it comes with Node.js)"
python3 -c 'import ensurepip, venv' 2>/dev/null ||
    { echo "$0: python3 cannot make a venv; install its venv module (Debian: python3-venv)" >&2; exit 1; }

if command -v sha256sum >/dev/null; then sha256=(sha256sum); else sha256=(shasum -a 256); fi

# A digest of the named files' contents, and of any extra words given after `--`.
digest() {
    local files=() extra=()
    while (($#)) && [[ "$1" != -- ]]; do files+=("$1"); shift; done
    (($#)) && shift && extra=("$@")
    { cat "${files[@]}"; printf '%s\n' "${extra[@]}"; } | "${sha256[@]}" | cut -d' ' -f1
}

# Runs "$@" unless $stamp already holds $key; records $key after a successful run.
unless_stamped() {
    local stamp="$1" key="$2"
    shift 2
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]]; then
        return 0
    fi
    "$@"
    printf '%s\n' "$key" >"$stamp"
}

python_tools() {
    echo "==> componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION"
}
unless_stamped "$venv/.resman-tools" "componentize-py==$COMPONENTIZE_PY_VERSION" python_tools

js_tools() {
    echo "==> npm ci in plugins/booking"
    (cd plugins/booking && npm ci --no-audit --no-fund --loglevel=error)
}
unless_stamped plugins/booking/node_modules/.resman-tools \
    "$(digest plugins/booking/package-lock.json -- "$(node --version)")" js_tools

wit=(sdk/wit/*.wit)

python_component() {
    echo "==> $out/ticket-price.wasm (componentize-py)"
    # No VIRTUAL_ENV: only the plugin's own folder (and the standard library) goes in.
    env -u VIRTUAL_ENV "$venv/bin/componentize-py" --quiet -d sdk/wit -w jobber componentize app \
        -p plugins/ticket-price -o "$out/.ticket-price.wasm.partial"
    mv "$out/.ticket-price.wasm.partial" "$out/ticket-price.wasm"
}
[[ -f "$out/ticket-price.wasm" ]] || rm -f "$out/.ticket-price.inputs"
unless_stamped "$out/.ticket-price.inputs" \
    "$(digest plugins/ticket-price/*.py "${wit[@]}" -- "$COMPONENTIZE_PY_VERSION")" python_component

js_component() {
    echo "==> $out/booking.wasm (componentize-js)"
    node plugins/booking/build.mjs "$out/booking.wasm" >/dev/null
}
[[ -f "$out/booking.wasm" ]] || rm -f "$out/.booking.inputs"
unless_stamped "$out/.booking.inputs" \
    "$(digest plugins/booking/*.js plugins/booking/*.mjs plugins/booking/package-lock.json "${wit[@]}")" \
    js_component

ls -l "$out/ticket-price.wasm" "$out/booking.wasm"
