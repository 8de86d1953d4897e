#!/usr/bin/env bash
# Installs what the other scripts need, only what is missing:
#   setup.sh [all|rust|wasm|binaryen|envoy|bindgen|integration|xds]
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rust() {
  command -v cargo >/dev/null || die "no cargo: install Rust with rustup (https://rustup.rs)"
}

wasm() {
  # The filter is built for WASI; the core's tests run on wasm32-unknown-unknown (in Node).
  wasm_toolchain wasm32-wasip1 >/dev/null
  wasm_toolchain wasm32-unknown-unknown >/dev/null
}

integration() {
  # The survival test writes raw HTTP over TLS with `openssl s_client`.
  command -v openssl >/dev/null || apt_install openssl
}

xds() {
  # The xDS test control plane's Python (xds-protos, grpcio) for integration/tests/istio_sidecar.rs.
  "$ROOT/scripts/xds-python.sh" >/dev/null
}

binaryen() {
  # wasm-metadce, wasm-opt and wasm-dis for the modules' post-link step (scripts/wasm-post-link.sh).
  local tool
  for tool in wasm-metadce wasm-opt wasm-dis; do
    command -v "$tool" >/dev/null || { apt_install binaryen; return; }
  done
}

envoy() {
  "$ROOT/scripts/envoy.sh" "$ENVOY_VERSION" >/dev/null
}

bindgen() {
  local dir v
  dir=$(bindgen_root)
  [ -x "$dir/bin/wasm-bindgen-test-runner" ] && return
  rust
  v=${dir##*-}
  log "installing wasm-bindgen-cli $v into $dir"
  # Not --locked: its lock file names a crate version the registry no longer serves.
  cargo install --quiet wasm-bindgen-cli --version "$v" --root "$dir"
}

case "${1:-all}" in
  # (not `a && b`: bash ignores set -e inside functions called from an && list)
  all) rust; wasm; binaryen; bindgen; envoy; integration; xds ;;
  rust | wasm | binaryen | envoy | bindgen | integration | xds) "$1" ;;
  *) die "usage: $0 [all|rust|wasm|binaryen|envoy|bindgen|integration|xds]" ;;
esac
