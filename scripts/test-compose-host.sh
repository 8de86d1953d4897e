#!/usr/bin/env bash
# Runs the docker-compose demo's parts without Docker: test-compose-host.sh [MODULE]
# For machines without a Docker Engine (scripts/test-compose.sh brings the stack itself up where
# there is one): this runs what the containers of deploy/compose/compose.yaml run, on this host,
# with the values the compose file sets:
#   certs    deploy/compose/gen-certs.sh, with the compose file's identity
#   render   deploy/compose/render-config.sh on envoy-config/loopback-guard.yaml, with the
#            render service's environment (ports moved to free ones, paths to a temp dir, and
#            the backend container stood in for by the template's own backend listener)
#   envoy    the Envoy binary of the tests (same version as the compose image), TRUST_DOMAIN set
#   app      deploy/compose/app.sh: rightful 200, rogue 403, no certificate refused
# What it cannot show is Docker itself (images, volumes, network_mode): scripts/test-compose.sh.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wasm=${1:-${LOOPBACK_GUARD_WASM:-$ROOT/dist/loopback_guard.wasm}}
[ -f "$wasm" ] || die "no module at $wasm (run make build)"
wasm=$(realpath "$wasm")
py=$("$ROOT/scripts/py.sh")
envoy=$("$ROOT/scripts/envoy.sh")
compose="$ROOT/deploy/compose/compose.yaml"

tmp=$(mktemp -d)
envoy_pid=
cleanup() {
  if [ -n "$envoy_pid" ]; then kill "$envoy_pid" 2>/dev/null || true; wait "$envoy_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The services' environments from the compose file, as shell assignments.
"$py" - "$compose" "$tmp" "$wasm" >"$tmp/env.sh" <<'PY'
import shlex, socket, sys, yaml
compose, tmp, wasm = sys.argv[1:]
services = yaml.safe_load(open(compose))["services"]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return str(port)
render = {k: str(v) for k, v in services["render"]["environment"].items()}
render.update(ADMIN_PORT=free_port(), LISTEN_PORT=free_port(), LENIENT_PORT=free_port(), BACKEND_PORT=free_port(),
              BACKEND_HOST="127.0.0.1", CERT_DIR=f"{tmp}/certs", WASM=wasm)
certs = {k: str(v) for k, v in services["certs"]["environment"].items()}
envoy = {k: str(v) for k, v in services["envoy"]["environment"].items()}
for prefix, env in (("RENDER", render), ("CERTS", certs), ("ENVOY", envoy)):
    print(f"{prefix}_ENV=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items())) + ")")
print(f"LISTEN_PORT={render['LISTEN_PORT']}")
print(f"ADMIN_PORT={render['ADMIN_PORT']}")
PY
# shellcheck disable=SC1091
source "$tmp/env.sh"

env "${CERTS_ENV[@]}" sh "$ROOT/deploy/compose/gen-certs.sh" "$tmp/certs" >&2 || die "gen-certs.sh failed"
env -i PATH="$PATH" "${RENDER_ENV[@]}" sh "$ROOT/deploy/compose/render-config.sh" \
  "$ROOT/envoy-config/loopback-guard.yaml" "$tmp/envoy.yaml" >&2 || die "render-config.sh failed"
env "${ENVOY_ENV[@]}" "$envoy" --mode validate -c "$tmp/envoy.yaml" -l warning >&2 ||
  die "envoy --mode validate rejects the rendered config"

env "${ENVOY_ENV[@]}" "$envoy" -c "$tmp/envoy.yaml" --use-dynamic-base-id -l warning \
  --component-log-level wasm:info >"$tmp/envoy.log" 2>&1 &
envoy_pid=$!
log "envoy (pid $envoy_pid) on the rendered config; the app calls 127.0.0.1:$LISTEN_PORT"
if ! GUARD_URL="https://127.0.0.1:$LISTEN_PORT" CERT_DIR="$tmp/certs" sh "$ROOT/deploy/compose/app.sh"; then
  log "envoy log:"; tail -n 40 "$tmp/envoy.log" >&2
  die "the compose demo's app did not see rightful 200, rogue 403, no certificate refused"
fi
grep -q '"decision":"deny","reason":"principal_mismatch"' "$tmp/envoy.log" ||
  { tail -n 40 "$tmp/envoy.log" >&2; die "no principal_mismatch decision line in Envoy's log"; }
[ -z "${SHOW_ENVOY_LOG:-}" ] || cat "$tmp/envoy.log" >&2
echo "test-compose-host: 1 passed, 0 failed"
