#!/usr/bin/env bash
# Checks deploy/ offline (scripts/validate-manifests.py says how): test-deploy.sh [MODULE]
# Istio manifests of both families (WasmPlugin for Istio 1.26-1.29, TrafficExtension for 1.30+)
# and a fresh rendering for every supported Istio version (scripts/istio-manifests.py) against
# deploy/schemas/istio-crds.yaml and Kubernetes' schemas, against
# each other, the EnvoyFilter's listener in a real `envoy --mode validate` inside a sidecar-shaped
# bootstrap (also with the WasmPlugin inlined and the built module loaded), the compose file
# against deploy/schemas/compose-spec.json, and a self-test that breaks each of these on
# purpose; then the compose demo's scripts run for real without Docker (scripts/test-compose-host.sh;
# scripts/test-compose.sh runs the stack itself on the Docker Engine).
# MODULE defaults to $LOOPBACK_GUARD_WASM or dist/loopback_guard.wasm.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wasm=${1:-${LOOPBACK_GUARD_WASM:-$ROOT/dist/loopback_guard.wasm}}
[ -f "$wasm" ] || die "no module at $wasm (run make build)"
# A snapshot: a rebuild of dist/ during the checks must not change the module under test.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$wasm" "$tmp/loopback_guard.wasm"
wasm="$tmp/loopback_guard.wasm"
py=$("$ROOT/scripts/py.sh")
envoy=$("$ROOT/scripts/envoy.sh")
"$py" "$ROOT/scripts/validate-manifests.py" --self-test --envoy "$envoy" --wasm "$wasm"
# Connection scope's manifests (deploy/istio/connection/): the module as a NETWORK filter.
"$py" "$ROOT/scripts/validate-connection-manifests.py" --self-test --envoy "$envoy" --wasm "$wasm"
"$ROOT/scripts/test-compose-host.sh" "$wasm"
