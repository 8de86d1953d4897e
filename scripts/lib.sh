#!/usr/bin/env bash
# Shared by the scripts in this directory (sourced, not run): paths, logging, and the choice of
# the wasm toolchain: rustup's wasm targets when it can get them, else Debian's Rust building std
# from source (on some machines the rustup download hangs).
set -euo pipefail
shopt -s inherit_errexit # so `x=$(fn)` stops at the first failure inside fn

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools live outside the repo: a fresh clone on the same machine reuses them.
CACHE="${LOOPBACK_GUARD_CACHE:-$HOME/.cache/loopback-guard}"
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"

log() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# apt-get install, refreshing the package lists first (a fresh machine has none), once per run.
apt_updated=
apt_install() {
  command -v apt-get >/dev/null || die "missing $*, and no apt-get here to install it"
  log "installing $* with apt-get"
  [ -n "$apt_updated" ] || as_root apt-get update -qq >&2
  apt_updated=1
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Prints "rustup" or "debian": the toolchain that builds for target $1, installing what it needs.
wasm_toolchain() {
  local target=$1 marker="$CACHE/rustup-hangs" rc=0
  # LOOPBACK_GUARD_TOOLCHAIN=debian forces the fallback (to test it where rustup works).
  if [ "${LOOPBACK_GUARD_TOOLCHAIN:-}" != debian ] && command -v rustup >/dev/null; then
    # (In $ROOT, where a rust-toolchain file would choose the toolchain. grep without -q: with
    # pipefail, -q quitting early could fail the pipeline on SIGPIPE.)
    if (cd "$ROOT" && rustup target list --installed) | grep -x "$target" >/dev/null; then
      echo rustup; return
    fi
    # The download can hang (no answer) instead of failing: never wait on it for long, and after
    # a hang (of any target) use the fallback for a day without trying again. A quick failure is
    # not remembered.
    if [ -z "$(find "$marker" -mmin -1440 2>/dev/null)" ]; then
      log "rustup target add $target (20 s at most)"
      (cd "$ROOT" && timeout 20 rustup target add "$target") >&2 || rc=$?
      if [ "$rc" -eq 0 ]; then echo rustup; return; fi
      if [ "$rc" -eq 124 ]; then mkdir -p "$CACHE" && touch "$marker"; fi
      log "rustup could not add $target; using Debian's Rust and building std from source"
    fi
  fi
  if [ ! -x /usr/bin/cargo ] || ! command -v wasm-ld-22 >/dev/null ||
    [ ! -d /usr/lib/rustlib/src/rust/library ] || [ ! -d /usr/lib/wasm32-wasi ]; then
    apt_install rustc-web cargo-web rust-web-src lld-22 wasi-libc
  fi
  echo debian
}

# Builds PACKAGE for wasm32-wasip1 in release with the toolchain wasm_toolchain chooses, cargo's
# output on stderr, and prints the linked module's path:
#   cargo_wasm_module TARGET_DIR PACKAGE [CARGO_ARGS...]
cargo_wasm_module() {
  local target=wasm32-wasip1 target_dir=$1 package=$2 module
  shift 2
  case "$(wasm_toolchain "$target")" in
    rustup)
      CARGO_TARGET_DIR="$target_dir" cargo build --locked --release --target "$target" -p "$package" "$@" >&2
      ;;
    debian)
      # Debian's rustc has no prebuilt std for wasm: build it from source (RUSTC_BOOTSTRAP allows
      # -Z), link with lld against Debian's WASI libc. Debian's tools come after ~/.cargo/bin on
      # PATH, hence /usr/bin first; artifacts go to their own dir so the toolchains never mix.
      target_dir="$target_dir/debian"
      PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target_dir" \
        CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-22 \
        RUSTFLAGS="-L /usr/lib/wasm32-wasi -C link-self-contained=no" \
        cargo build --locked --release --target "$target" -p "$package" "$@" \
        -Z build-std=std,panic_abort >&2
      ;;
  esac
  module="$target_dir/$target/release/${package//-/_}.wasm"
  [ -f "$module" ] || die "cargo built no $module"
  echo "$module"
}

# The shipped module's post-link step (scripts/wasm-post-link.sh with the exports listed in
# scripts/wasm-exports.txt), IN to OUT: post_link_shipped IN OUT
post_link_shipped() {
  local exports
  mapfile -t exports < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$ROOT/scripts/wasm-exports.txt")
  "$ROOT/scripts/wasm-post-link.sh" "$1" "$2" "${exports[@]}"
}

# The wasm-bindgen-cli install matching the wasm-bindgen in Cargo.lock (the runner refuses any
# other version).
bindgen_root() {
  local v
  v=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' \
    "$ROOT/Cargo.lock")
  [ -n "$v" ] || die "no wasm-bindgen in Cargo.lock"
  echo "$CACHE/wasm-bindgen-$v"
}
