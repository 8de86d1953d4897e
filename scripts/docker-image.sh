#!/usr/bin/env bash
# Builds the module's OCI image with `docker build` from the Dockerfile, on the Docker Engine:
#   docker-image.sh [MODULE] [NAME]
# MODULE defaults to $LOOPBACK_GUARD_WASM or dist/loopback_guard.wasm, NAME to
# $DOCKER_IMAGE or loopback-guard:dev. The build context is a directory holding only the module
# (as dist/ would, without what else dist/ holds). Then the built image is checked as the engine
# stores it (`docker save`): one layer, holding exactly plugin.wasm, byte for byte the module.
# Prints the image's ID. Without an engine it says so and exits 0 (scripts/docker-lib.sh; under
# CI=true with Docker installed, an error).
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/docker-lib.sh
source "$ROOT/scripts/docker-lib.sh"

wasm=${1:-${LOOPBACK_GUARD_WASM:-$ROOT/dist/loopback_guard.wasm}}
name=${2:-${DOCKER_IMAGE:-loopback-guard:dev}}
[ -f "$wasm" ] || die "no module at $wasm (run make build)"
problem=$(docker_engine_problem)
if [ -n "$problem" ]; then docker_skip_or_die "docker build" "$problem" >&2; exit 0; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/context"
cp "$wasm" "$tmp/context/loopback_guard.wasm"
# The classic builder: the engine's own (20.10 here); BuildKit's needs the buildx plugin, and
# would add an attestation manifest unless told --provenance=false.
DOCKER_BUILDKIT=0 docker build --quiet -f "$ROOT/Dockerfile" -t "$name" "$tmp/context" >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; die "docker build failed"; }
id=$(docker image inspect -f '{{.Id}}' "$name")

docker save "$name" -o "$tmp/image.tar" || die "docker save $name failed"
python3 - "$tmp/image.tar" "$(sha256sum "$wasm" | cut -d' ' -f1)" <<'PY' || die "$name does not hold exactly the module"
import hashlib, io, json, sys, tarfile
saved, want = sys.argv[1], sys.argv[2]
with tarfile.open(saved) as outer:
    manifest = json.load(outer.extractfile("manifest.json"))
    if len(manifest) != 1 or len(manifest[0]["Layers"]) != 1:
        sys.exit(f"expected one image with one layer, found {[len(m['Layers']) for m in manifest]} layers")
    layer = outer.extractfile(manifest[0]["Layers"][0]).read()
with tarfile.open(fileobj=io.BytesIO(layer)) as inner:
    members = inner.getmembers()
    names = [m.name for m in members]
    if names != ["plugin.wasm"] or not members[0].isfile():
        sys.exit(f"the layer holds {names}, expected exactly the file plugin.wasm")
    got = hashlib.sha256(inner.extractfile(members[0]).read()).hexdigest()
if got != want:
    sys.exit(f"plugin.wasm sha256:{got}, the module sha256:{want}")
print(f"docker-image.sh: ok: one layer, exactly plugin.wasm, sha256:{got} = the module", file=sys.stderr)
PY
log "built $name ($id) with docker build"
echo "$id"
