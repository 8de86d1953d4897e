#!/usr/bin/env bash
# `make lint`: formatting, then clippy with warnings as errors wherever the code is compiled:
# the workspace natively (every target), the filter, the empty benchmark filter and the core for
# wasm32-wasip1 (what Envoy loads; code under cfg(target_arch = "wasm32") is only seen there),
# and the fuzz targets (a workspace of their own).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

cargo fmt --all --check
cargo fmt --all --check --manifest-path fuzz/Cargo.toml

cargo clippy --locked --workspace --all-targets -- -D warnings

case "$(wasm_toolchain wasm32-wasip1)" in
  rustup)
    cargo clippy --locked --target wasm32-wasip1 \
      -p loopback-guard -p loopback-guard-bench-empty -p loopback-guard-core --lib --tests \
      -- -D warnings
    ;;
  debian)
    # Debian's Rust, the fallback when rustup cannot fetch the target, ships no clippy; the
    # module's build (`make build`) still compiles this code for wasm32.
    log "SKIPPED clippy on wasm32-wasip1: rustup has no wasm32-wasip1 target on this machine"
    ;;
esac

command -v c++ >/dev/null || apt_install g++ # libfuzzer-sys builds libFuzzer (C++)
cargo clippy --locked --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

# core's module graph has no cycle (issue 22).
python3 scripts/core-imports.py >/dev/null
