#!/usr/bin/env bash
# Builds loopback-guard with the `bench-full-decisions` feature (no per-connection verdict: every
# request is decided in full, as a connection's first one is) for benchmark arms A3-full and
# A4-full, through the shipped module's post-link step, into
# target/bench/loopback_guard_full.wasm, and prints that path. Its own cargo target dir, so that
# it never displaces the shipped build.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

out="$ROOT/target/bench/loopback_guard_full.wasm"
cd "$ROOT"
module=$(cargo_wasm_module "${CARGO_TARGET_DIR:-$ROOT/target}/bench-full" loopback-guard \
  --features bench-full-decisions)
mkdir -p "$(dirname "$out")"
post_link_shipped "$module" "$out" >&2
echo "$out"
