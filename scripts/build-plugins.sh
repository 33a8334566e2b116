#!/usr/bin/env bash
# Builds every plugin (plugins/*) and test fixture (tests/fixtures/*) both ways, as a WASM
# component (wasm32-wasip2) and as a native library, and copies them to
# $CARGO_TARGET_DIR/plugins/<profile>/ (default target/plugins/debug/) as <name>.wasm and
# <name>.so, <name> being the package name without `resman-plugin-` / `resman-fixture-`.
# wrong-abi is native only. Usage: scripts/build-plugins.sh [debug|release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-debug}"
case "$profile" in
    debug) flags=() wasm_flags=() ;;
    # Release components carry no debug info: smaller files that compile faster at load.
    release) flags=(--release) wasm_flags=(--config profile.release.debug=false --config profile.release.strip=true
        --config profile.release.lto=true --config profile.release.codegen-units=1) ;;
    *) echo "usage: $0 [debug|release]" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/plugins/$profile"
case "$(uname -s)" in
    Darwin) native_ext=dylib ;;
    *) native_ext=so ;;
esac

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

packages=() wasm_packages=()
for manifest in plugins/*/Cargo.toml tests/fixtures/*/Cargo.toml; do
    package="$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)"
    packages+=("$package")
    [[ "$package" == resman-fixture-wrong-abi ]] || wasm_packages+=("$package")
done

cargo build "${flags[@]}" "${wasm_flags[@]}" --target wasm32-wasip2 "${wasm_packages[@]/#/-p=}"
cargo build "${flags[@]}" "${packages[@]/#/-p=}"

mkdir -p "$out"
for package in "${packages[@]}"; do
    short="${package#resman-plugin-}"
    short="${short#resman-fixture-}"
    lib="${package//-/_}"
    cp "$target_dir/$profile/lib$lib.$native_ext" "$out/$short.$native_ext"
    if [[ " ${wasm_packages[*]} " == *" $package "* ]]; then
        cp "$target_dir/wasm32-wasip2/$profile/$lib.wasm" "$out/$short.wasm"
    fi
done
ls -l "$out"
