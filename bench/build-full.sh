#!/usr/bin/env bash
# Builds loopback-guard with the `bench-full-decisions` feature (no per-connection verdict: every
# request is decided in full, as a connection's first one is) for benchmark arms A3-full and
# A4-full, through the shipped module's post-link step, into
# target/bench/loopback_guard_full.wasm, and prints that path. Its own cargo target dir, so that
# it never displaces the shipped build. The same toolchain choice as scripts/build-wasm.sh.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

target=wasm32-wasip1
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}/bench-full"
out="$ROOT/target/bench/loopback_guard_full.wasm"
cd "$ROOT"

case "$(wasm_toolchain "$target")" in
  rustup)
    CARGO_TARGET_DIR="$target_dir" \
      cargo build --locked --release --target "$target" -p loopback-guard --features bench-full-decisions >&2
    ;;
  debian)
    # As in build-wasm.sh: Debian's rustc, std built from source, its own target dir.
    target_dir="$target_dir/debian"
    PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
      CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-22 \
      RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no" \
      cargo build --locked --release --target "$target" -p loopback-guard --features bench-full-decisions \
      -Z build-std=std,panic_abort >&2
    ;;
esac

module="$target_dir/$target/release/loopback_guard.wasm"
[ -f "$module" ] || die "cargo built no $module"
mkdir -p "$(dirname "$out")"
mapfile -t exports < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$ROOT/scripts/wasm-exports.txt")
"$ROOT/scripts/wasm-post-link.sh" "$module" "$out" "${exports[@]}" >&2
echo "$out"
