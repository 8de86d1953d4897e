#!/usr/bin/env bash
# Runs the core's unit tests compiled to wasm32-unknown-unknown, in Node, under
# wasm-bindgen-test-runner. Fails if any test fails or if none ran.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

target=wasm32-unknown-unknown
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"

toolchain=$(wasm_toolchain "$target")
"$ROOT/scripts/setup.sh" bindgen
command -v node >/dev/null || apt_install nodejs
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$(bindgen_root)/bin/wasm-bindgen-test-runner"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
case "$toolchain" in
  rustup)
    cargo test --locked -p loopback-guard-core --lib --target "$target" 2>&1 | tee "$out"
    ;;
  debian)
    # As in build-wasm.sh, plus libtest's crate (`test`) built from source too; no RUSTFLAGS.
    PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir/debian" \
      CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 \
      cargo test --locked -p loopback-guard-core --lib --target "$target" \
      -Z build-std=std,panic_abort,test 2>&1 | tee "$out"
    ;;
esac

# The runner reports success when it finds no test at all (e.g. a test lacking the wasm
# attribute is silently skipped): require at least one pass.
passed=$(awk '/^test result: ok\./ { n += $4 } END { print n + 0 }' "$out")
[ "$passed" -gt 0 ] || die "no test ran on $target"
log "$passed tests passed on $target"
