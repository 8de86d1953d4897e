#!/usr/bin/env bash
# The shipped module again, through the same post-link step but with its function names kept
# (POST_LINK_KEEP_NAMES=1: same code, plus the `name` section), into
# target/bench/loopback_guard_named.wasm; prints that path. `make bench` reads the module's
# biggest functions from it (bench/wasm_sizes.py); the report checks that its code section is the
# shipped module's, byte for byte in size.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

cd "$ROOT"
module=$(cargo_wasm_module "${CARGO_TARGET_DIR:-$ROOT/target}" loopback-guard)
out="$ROOT/target/bench/loopback_guard_named.wasm"
mkdir -p "$(dirname "$out")"
POST_LINK_KEEP_NAMES=1 post_link_shipped "$module" "$out" >&2
echo "$out"
