#!/usr/bin/env bash
# Builds the filter for Envoy (wasm32-wasip1, release) into dist/loopback_guard.wasm: cargo, then
# the post-link step (scripts/wasm-post-link.sh) that keeps only the exports in
# scripts/wasm-exports.txt and optimises for size.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dist="$ROOT/dist/loopback_guard.wasm"
cd "$ROOT"
module=$(cargo_wasm_module "${CARGO_TARGET_DIR:-$ROOT/target}" loopback-guard)
# (It copies only when changed, so dist/'s timestamp means "the module changed".)
post_link_shipped "$module" "$dist"
echo "$dist ($(wc -c <"$dist") bytes; $(wc -c <"$module") before the post-link step)"
