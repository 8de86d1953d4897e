#!/usr/bin/env bash
# Checks that the workspace builds with the minimum Rust version its Cargo.toml states
# (`rust-version`): the toolchain is installed with rustup (minimal profile, once), then
# `cargo check` of every crate and target with the locked dependencies. Cargo refuses a
# dependency whose own rust-version is newer, so a lock update that raises the minimum fails
# here by name.
#
# If rustup cannot install that toolchain (no rustup, no network, a hung download), this says
# so and exits 0: the check is skipped, not passed.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

msrv=$(awk -F'"' '/^rust-version = "/ { print $2; exit }' Cargo.toml)
[[ "$msrv" =~ ^1\.[0-9]+(\.[0-9]+)?$ ]] || die "no rust-version in Cargo.toml's [workspace.package]"

skip() {
  log "SKIPPED: the minimum Rust version ($msrv) was not checked: $*"
  exit 0
}
command -v rustup >/dev/null || skip "no rustup to install Rust $msrv with"
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  log "installing Rust $msrv with rustup (minimal profile; 5 minutes at most)"
  rc=0
  timeout 300 rustup toolchain install "$msrv" --profile minimal --no-self-update >&2 || rc=$?
  [ "$rc" -eq 0 ] || skip "rustup toolchain install $msrv failed (exit $rc)"
fi

log "cargo +$msrv check of the whole workspace"
cargo "+$msrv" check --locked --workspace --all-targets --target-dir "$ROOT/target/msrv"
log "the workspace builds with Rust $msrv, its stated rust-version"
