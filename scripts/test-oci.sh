#!/usr/bin/env bash
# The OCI round trip with real parts: test-oci.sh [MODULE]
#   1. packs the module twice (scripts/oci-image.sh) and requires identical layouts and digests;
#   2. starts a real registry (Debian's docker-registry, CNCF distribution) on 127.0.0.1 with a
#      throw-away config and storage, and pushes both images (scripts/oci-push.sh);
#   3. checks what the registry serves: manifest media type (header and body), layer count and
#      layer media types of each variant, digests unchanged; then pushes to a second registry
#      that requires TLS (a private CA) and a password, as a real one would: with both it
#      succeeds, without the credentials or without trusting the CA it must fail;
#   3c. applies istio-agent's own fetch rules (scripts/istio_fetch.py, reimplemented from Istio's
#      pkg/wasm) to these registries and a third one: classification, digest pinning, realm check;
#   4. pulls both back with skopeo, extracts the module the way istio-agent does
#      (scripts/oci_layout.py extract) and requires its sha256 to equal the build's;
#   5. checks the WasmPlugin that the push filled in: valid against the CRD schema, url naming
#      the pushed tag, sha256 equal to the manifest digest the registry serves (what istio-agent
#      compares it with);
#   6. runs the integration demo (a real Envoy) with the PULLED module: the rightful app must get
#      200 and the rogue one 403;
#   7. builds the Dockerfile's image with `docker build` on the Docker Engine (scripts/docker-image.sh:
#      one layer, exactly plugin.wasm = the module), pushes it with `docker push` to the same
#      registry, pulls it back with skopeo and extracts the module as istio-agent would (same
#      sha256), and with `docker pull` after removing it (same image ID). Without an engine this
#      step is skipped, saying so (under CI=true with Docker installed: an error).
# MODULE defaults to $LOOPBACK_GUARD_WASM or dist/loopback_guard.wasm. Nothing outside a temp
# directory is written; the registry is stopped on exit.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/docker-lib.sh
source "$ROOT/scripts/docker-lib.sh"

wasm=${1:-${LOOPBACK_GUARD_WASM:-$ROOT/dist/loopback_guard.wasm}}
[ -f "$wasm" ] || die "no module at $wasm (run make build)"
wasm=$(realpath "$wasm")
command -v skopeo >/dev/null || apt_install skopeo
command -v docker-registry >/dev/null || apt_install docker-registry
py=$("$ROOT/scripts/py.sh")

tmp=$(mktemp -d)
registry_pid=
tls_registry_pid=
open_registry_pid=
docker_names=()
cleanup() {
  [ ${#docker_names[@]} -eq 0 ] || docker image rm "${docker_names[@]}" >/dev/null 2>&1 || true
  for pid in $registry_pid $tls_registry_pid $open_registry_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  if [ -f "$tmp/registry.log" ]; then log "registry log:"; tail -n 30 "$tmp/registry.log" >&2; fi
  die "$*"
}
# await_port PORT PID LOG WHAT: until 127.0.0.2:PORT accepts, or fail when PID has exited.
await_port() {
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.2/$1") 2>/dev/null && return
    kill -0 "$2" 2>/dev/null || fail "$4 exited: $(cat "$3")"
    sleep 0.2
  done
  fail "$4 does not accept connections on 127.0.0.2:$1"
}

# A snapshot: a rebuild of dist/ during the test must not change the module under test.
cp "$wasm" "$tmp/module.wasm"
wasm="$tmp/module.wasm"
build_sha=$(sha256sum "$wasm" | cut -d' ' -f1)
log "module sha256:$build_sha"

# 1. Reproducible: two builds into different directories, byte-identical.
"$ROOT/scripts/oci-image.sh" "$wasm" "$tmp/oci-a" 2>/dev/null
"$ROOT/scripts/oci-image.sh" "$wasm" "$tmp/oci-b" 2>/dev/null
diff -r "$tmp/oci-a" "$tmp/oci-b" >/dev/null || fail "two builds of the same module differ"
cmp -s "$tmp/oci-a.json" "$tmp/oci-b.json" || fail "two builds of the same module have different digests"
digest() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$tmp/oci-a.json" "$1"; }
image_digest=$(digest image)
artifact_digest=$(digest artifact)
[ "$(digest module_sha256)" = "$build_sha" ] || fail "the layout's module is not the build"
log "ok: reproducible: image $image_digest, artifact $artifact_digest (two builds, identical)"

# 2. A real registry on a free loopback port.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/registry.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/registry-storage
http:
  addr: 127.0.0.1:$port
  secret: loopback-guard-test-only
YML
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
  if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
    "http://127.0.0.1:$port/v2/" 2>/dev/null; then break; fi
  kill -0 "$registry_pid" 2>/dev/null || fail "docker-registry exited"
  sleep 0.2
done
repo="127.0.0.1:$port/loopback-guard"
tag="test"
log "registry up at http://127.0.0.1:$port (pid $registry_pid)"

OCI_LAYOUT="$tmp/oci-a" WASMPLUGIN_OUT="$tmp/wasmplugin.yaml" \
  "$ROOT/scripts/oci-push.sh" "$repo" "$tag" || fail "push failed"

# 3. What the registry serves, fetched as an OCI client does (Accept header, digest header).
python3 - "http://127.0.0.1:$port/v2/loopback-guard/manifests" "$tag" "$image_digest" "$artifact_digest" <<'PY' ||
import hashlib, json, sys, urllib.request
base, tag, image_digest, artifact_digest = sys.argv[1:]
OCI = "application/vnd.oci.image.manifest.v1+json"
want = {
    tag: (image_digest, ["application/vnd.oci.image.layer.v1.tar+gzip"]),
    tag + "-artifact": (artifact_digest, ["application/vnd.module.wasm.config.v1+json",
                                          "application/vnd.module.wasm.content.layer.v1+wasm"]),
}
for ref, (digest, layers) in want.items():
    req = urllib.request.Request(f"{base}/{ref}", headers={"Accept": OCI})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body, ctype, dhdr = resp.read(), resp.headers["Content-Type"], resp.headers["Docker-Content-Digest"]
    manifest = json.loads(body)
    got = "sha256:" + hashlib.sha256(body).hexdigest()
    found = [l["mediaType"] for l in manifest["layers"]]
    checks = [
        (ctype == OCI, f"Content-Type {ctype}"),
        (manifest.get("mediaType") == OCI, f"mediaType {manifest.get('mediaType')}"),
        (got == digest and dhdr == digest, f"digest {got} (header {dhdr}), expected {digest}"),
        (len(found) == len(layers), f"{len(found)} layers, expected {len(layers)}"),
        (found == layers, f"layer media types {found}, expected {layers}"),
    ]
    for ok, text in checks:
        if not ok:
            sys.exit(f"{ref}: {text}")
    print(f"test-oci.sh: ok: {ref}: {OCI}, {len(found)} layer(s) {found}, {got}", file=sys.stderr)
PY
  fail "the registry does not serve the expected manifests"

# 3b. A registry like a real one: TLS with a certificate from a private CA, and a password.
# On 127.0.0.2 (loopback, but not one of the addresses oci-push.sh talks plain HTTP to).
tls="$tmp/tls"
mkdir -p "$tls/trust"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=test CA" \
  -keyout "$tls/ca-key.pem" -out "$tls/trust/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.2" \
  -keyout "$tls/server-key.pem" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName = IP:127.0.0.2\n' >"$tls/san.ext"
openssl x509 -req -days 1 -in "$tls/server.csr" -CA "$tls/trust/ca.crt" -CAkey "$tls/ca-key.pem" \
  -CAcreateserial -extfile "$tls/san.ext" -out "$tls/server.pem" 2>/dev/null
password=$(openssl rand -hex 16)
"$py" -c 'import bcrypt, sys; print("pusher:" + bcrypt.hashpw(sys.argv[1].encode(), bcrypt.gensalt()).decode())' \
  "$password" >"$tls/htpasswd"
tls_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.2", 0)); print(s.getsockname()[1])')
cat >"$tmp/tls-registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $tmp/tls-registry-storage
auth:
  htpasswd:
    realm: loopback-guard-test
    path: $tls/htpasswd
http:
  addr: 127.0.0.2:$tls_port
  secret: loopback-guard-test-only
  tls:
    certificate: $tls/server.pem
    key: $tls/server-key.pem
YML
docker-registry serve "$tmp/tls-registry.yml" >"$tmp/tls-registry.log" 2>&1 &
tls_registry_pid=$!
await_port "$tls_port" "$tls_registry_pid" "$tmp/tls-registry.log" "the TLS registry"
tls_repo="127.0.0.2:$tls_port/loopback-guard"
push_tls() { OCI_LAYOUT="$tmp/oci-a" WASMPLUGIN_OUT="$tmp/wasmplugin-tls.yaml" "$ROOT/scripts/oci-push.sh" "$tls_repo" tls; }
if REGISTRY_CERT_DIR="$tls/trust" push_tls 2>"$tmp/push.err"; then
  fail "pushed to a registry that requires a password without one"
fi
grep -qi "unauthorized\|authentication required" "$tmp/push.err" || fail "no credentials: $(cat "$tmp/push.err")"
if REGISTRY_CREDS="pusher:$password" push_tls 2>"$tmp/push.err"; then
  fail "pushed over TLS to a registry whose CA is not trusted"
fi
grep -qi "certificate" "$tmp/push.err" || fail "untrusted CA: $(cat "$tmp/push.err")"
REGISTRY_CERT_DIR="$tls/trust" REGISTRY_CREDS="pusher:$password" push_tls 2>"$tmp/push.err" ||
  fail "push over TLS with credentials failed: $(cat "$tmp/push.err")"
log "ok: TLS registry with a password: refused without credentials, refused without trusting its CA, pushed with both"

# 3c. istio-agent's own fetch rules (scripts/istio_fetch.py, from istio/istio pkg/wasm at
# 1.31.0-rc.0), against these registries: format classification, digest pinning, the realm check
# that refuses htpasswd's Basic realm label (3b), and a third registry like 3b whose Basic realm
# is an https URL, which that check lets through.
open_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.2", 0)); print(s.getsockname()[1])')
sed -e "s|realm: loopback-guard-test|realm: https://registry.example.com/|" \
  -e "s|127.0.0.2:$tls_port|127.0.0.2:$open_port|" -e "s|tls-registry-storage|open-registry-storage|" \
  "$tmp/tls-registry.yml" >"$tmp/open-registry.yml"
docker-registry serve "$tmp/open-registry.yml" >"$tmp/open-registry.log" 2>&1 &
open_registry_pid=$!
await_port "$open_port" "$open_registry_pid" "$tmp/open-registry.log" "the third registry"
tls_repo="127.0.0.2:$open_port/loopback-guard"
REGISTRY_CERT_DIR="$tls/trust" REGISTRY_CREDS="pusher:$password" push_tls 2>"$tmp/push.err" ||
  fail "push to the third registry failed: $(cat "$tmp/push.err")"
"$py" "$ROOT/scripts/istio_fetch.py" run --plain "127.0.0.1:$port" --repo loopback-guard --tag "$tag" \
  --artifact-tag "$tag-artifact" --digest "$image_digest" --artifact-digest "$artifact_digest" \
  --module "$build_sha" --tls "127.0.0.2:$tls_port" --tls-open "127.0.0.2:$open_port" \
  --creds "pusher:$password" || fail "istio-agent's fetch rules: see above"
kill "$open_registry_pid" 2>/dev/null || true
wait "$open_registry_pid" 2>/dev/null || true
open_registry_pid=
log "ok: istio-agent's fetch rules (classification, digest pinning, realm check) on real registries"

# 4. Pull back with skopeo and extract the module as istio-agent would.
for ref in image artifact; do
  src="docker://$repo:$tag"
  [ "$ref" = artifact ] && src="docker://$repo:$tag-artifact"
  skopeo copy --quiet --preserve-digests --src-tls-verify=false "$src" "oci:$tmp/pulled:$ref" >&2 ||
    fail "skopeo could not pull $src"
  python3 "$ROOT/scripts/oci_layout.py" extract --layout "$tmp/pulled" --ref "$ref" --variant "$ref" \
    --out "$tmp/pulled-$ref.wasm" >/dev/null || fail "$src is not in the $ref format"
  got=$(sha256sum "$tmp/pulled-$ref.wasm" | cut -d' ' -f1)
  [ "$got" = "$build_sha" ] || fail "$src: pulled module sha256:$got, built sha256:$build_sha"
  log "ok: pulled $src: module sha256:$got = the build"
done

# 5. The filled-in WasmPlugin: schema-valid, and pinned to what the registry serves.
"$py" "$ROOT/scripts/validate-manifests.py" --no-consistency "$tmp/wasmplugin.yaml" >/dev/null ||
  fail "the filled-in WasmPlugin does not validate"
served=sha256:$(skopeo inspect --raw --tls-verify=false "docker://$repo:$tag" | sha256sum | cut -d' ' -f1)
"$py" - "$tmp/wasmplugin.yaml" "oci://$repo:$tag" "$served" <<'PY' || fail "the filled-in WasmPlugin is wrong"
import sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))["spec"]
url, served = sys.argv[2], sys.argv[3]
if spec["url"] != url:
    sys.exit(f"WasmPlugin url {spec['url']}, expected {url}")
if "sha256:" + spec["sha256"] != served:
    sys.exit(f"WasmPlugin sha256 {spec['sha256']}, but the registry serves {served}")
PY
log "ok: WasmPlugin url oci://$repo:$tag, sha256 ${served#sha256:} = the manifest digest served"

# 6. A real Envoy with the pulled module.
[ -f "$ROOT/integration/src/bin/demo.rs" ] || [ -f "$ROOT/integration/src/bin/demo/main.rs" ] ||
  die "no integration demo (integration/src/bin/demo.rs): cannot run Envoy with the pulled module"
log "running the integration demo with the pulled module"
(cd "$ROOT" && ENVOY_BIN="$("$ROOT/scripts/envoy.sh")" LOOPBACK_GUARD_WASM="$tmp/pulled-image.wasm" \
  cargo run --locked --quiet -p loopback-guard-integration --bin demo) ||
  die "Envoy with the pulled module: the demo failed (rightful 200 / rogue 403 expected)"
log "ok: Envoy with the pulled module: rightful 200, rogue 403"

# 7. The Dockerfile's image, built by the engine, through the same registry.
problem=$(docker_engine_problem)
if [ -n "$problem" ]; then
  docker_skip_or_die "test-oci (docker build)" "$problem"
  echo "test-oci: 8 passed, 0 failed, 1 skipped"
  exit 0
fi
built="loopback-guard-test/plugin:oci-$$"
pushed="$repo:docker-build"
docker_names=("$built" "$pushed")
id=$("$ROOT/scripts/docker-image.sh" "$wasm" "$built") || fail "docker build of the Dockerfile failed"
docker tag "$built" "$pushed"
docker push --quiet "$pushed" >/dev/null || fail "docker push $pushed failed"
# (skopeo converts the engine's Docker manifest to OCI, as an OCI layout requires.)
skopeo copy --quiet --src-tls-verify=false "docker://$pushed" "oci:$tmp/docker-pulled:image" >&2 ||
  fail "skopeo could not pull $pushed"
python3 "$ROOT/scripts/oci_layout.py" extract --layout "$tmp/docker-pulled" --ref image --variant image \
  --out "$tmp/docker-pulled.wasm" >/dev/null || fail "$pushed is not in the image format istio-agent reads"
got=$(sha256sum "$tmp/docker-pulled.wasm" | cut -d' ' -f1)
[ "$got" = "$build_sha" ] || fail "$pushed: module sha256:$got, built sha256:$build_sha"
docker image rm "$built" "$pushed" >/dev/null
docker pull --quiet "$pushed" >/dev/null || fail "docker pull $pushed failed"
[ "$(docker image inspect -f '{{.Id}}' "$pushed")" = "$id" ] || fail "docker pull $pushed: another image ID than the build's $id"
log "ok: docker build: one layer holding exactly plugin.wasm; pushed, pulled back by skopeo (module sha256:$got = the build) and by docker (image $id)"
echo "test-oci: 9 passed, 0 failed"
