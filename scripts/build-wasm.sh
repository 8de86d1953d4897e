#!/usr/bin/env bash
# Builds the filter for Envoy (wasm32-wasip1, release) into dist/loopback_guard.wasm: cargo, then
# the post-link step (scripts/wasm-post-link.sh) that keeps only the exports in
# scripts/wasm-exports.txt and optimises for size.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

target=wasm32-wasip1
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
dist="$ROOT/dist/loopback_guard.wasm"
cd "$ROOT"

case "$(wasm_toolchain "$target")" in
  rustup)
    cargo build --locked --release --target "$target" -p loopback-guard
    ;;
  debian)
    # Debian's rustc has no prebuilt std for wasm: build it from source (RUSTC_BOOTSTRAP allows
    # -Z), link with lld against Debian's WASI libc. Debian's tools come after ~/.cargo/bin on
    # PATH, hence /usr/bin first; artifacts go to their own dir so the toolchains never mix.
    target_dir="$target_dir/debian"
    PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
      CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-22 \
      RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no" \
      cargo build --locked --release --target "$target" -p loopback-guard \
      -Z build-std=std,panic_abort
    ;;
esac

module="$target_dir/$target/release/loopback_guard.wasm"
[ -f "$module" ] || die "cargo built no $module"
mapfile -t exports < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$ROOT/scripts/wasm-exports.txt")
# (It copies only when changed, so dist/'s timestamp means "the module changed".)
"$ROOT/scripts/wasm-post-link.sh" "$module" "$dist" "${exports[@]}"
echo "$dist ($(wc -c <"$dist") bytes; $(wc -c <"$module") before the post-link step)"
