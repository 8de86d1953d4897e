#!/usr/bin/env bash
# Builds benchmark arm A1's module (bench/empty-filter, wasm32-wasip1, release) with the same
# toolchain choice as scripts/build-wasm.sh, into target/bench/loopback_guard_bench_empty.wasm,
# and prints that path. (build-wasm.sh builds only the filter's package, hence this script.)
#
#   build-empty.sh min
#
# builds arm A1-min's instead: the same module through the shipped module's post-link step
# (scripts/wasm-post-link.sh with scripts/wasm-exports.txt), so that it exports exactly the
# callbacks loopback-guard does; into target/bench/loopback_guard_bench_empty_min.wasm.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

target=wasm32-wasip1
package=loopback-guard-bench-empty
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
out="$ROOT/target/bench/loopback_guard_bench_empty.wasm"
case "${1:-}" in
  "") variant=sdk ;;
  min) variant=min ;;
  *) die "usage: $0 [min]" ;;
esac
cd "$ROOT"

case "$(wasm_toolchain "$target")" in
  rustup)
    cargo build --locked --release --target "$target" -p "$package" >&2
    ;;
  debian)
    # As in build-wasm.sh: Debian's rustc, std built from source, its own target dir.
    target_dir="$target_dir/debian"
    PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
      CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-22 \
      RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no" \
      cargo build --locked --release --target "$target" -p "$package" \
      -Z build-std=std,panic_abort >&2
    ;;
esac

module="$target_dir/$target/release/loopback_guard_bench_empty.wasm"
[ -f "$module" ] || die "cargo built no $module"
mkdir -p "$(dirname "$out")"
if [ "$variant" = min ]; then
  out="$ROOT/target/bench/loopback_guard_bench_empty_min.wasm"
  mapfile -t exports < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$ROOT/scripts/wasm-exports.txt")
  "$ROOT/scripts/wasm-post-link.sh" "$module" "$out" "${exports[@]}" >&2
else
  cmp -s "$module" "$out" || cp "$module" "$out"
fi
echo "$out"
