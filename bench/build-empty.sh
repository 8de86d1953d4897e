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

package=loopback-guard-bench-empty
out="$ROOT/target/bench/loopback_guard_bench_empty.wasm"
case "${1:-}" in
  "") variant=sdk ;;
  min) variant=min ;;
  *) die "usage: $0 [min]" ;;
esac
cd "$ROOT"

module=$(cargo_wasm_module "${CARGO_TARGET_DIR:-$ROOT/target}" "$package")
mkdir -p "$(dirname "$out")"
if [ "$variant" = min ]; then
  out="$ROOT/target/bench/loopback_guard_bench_empty_min.wasm"
  post_link_shipped "$module" "$out" >&2
else
  cmp -s "$module" "$out" || cp "$module" "$out"
fi
echo "$out"
