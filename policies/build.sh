#!/usr/bin/env bash
# Builds the default policy component reproducibly.
#
#   policies/build.sh [OUTPUT]      (default: policies/default.wasm)
#
# The committed policies/default.wasm is the output of this script; the test
# `default_wasm_matches_source` runs it again and compares the bytes.
# Path prefixes are remapped so the bytes do not depend on where the
# repository or the cargo registry live.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
output=${1:-$root/policies/default.wasm}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
target_dir=${CARGO_TARGET_DIR:-$root/target}/policy-build

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
RUSTFLAGS="--remap-path-prefix=$root=/umbra --remap-path-prefix=$cargo_home=/cargo" \
  cargo build --manifest-path "$root/Cargo.toml" --locked --quiet \
    -p umbra-default-policy --target wasm32-wasip2 --release \
    --target-dir "$target_dir"
cp "$target_dir/wasm32-wasip2/release/umbra_default_policy.wasm" "$output"
