#!/usr/bin/env bash
# The whole test suite, as CI runs it, from a fresh machine: installs what the build needs,
# checks formatting and lints, then runs every unit, doc and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
fi

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "plugins (wasm32-wasip2 components and native libraries)"
./scripts/build-plugins.sh debug
./scripts/build-guest-langs.sh debug

step "test"
# The plugins are built, so a unit test that cannot find one fails instead of skipping.
RESMAN_REQUIRE_PLUGINS=1 cargo test --workspace --locked
