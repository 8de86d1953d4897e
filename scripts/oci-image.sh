#!/usr/bin/env bash
# Packs the module as OCI images, without Docker: oci-image.sh [MODULE] [LAYOUT_DIR]
# Defaults: MODULE = $LOOPBACK_GUARD_WASM or dist/loopback_guard.wasm, LAYOUT_DIR = dist/oci.
#
# LAYOUT_DIR becomes an OCI image layout holding two images of the same module (the formats
# istio-agent accepts; scripts/oci_layout.py describes them):
#   oci:LAYOUT_DIR:image     one tar+gzip layer with plugin.wasm  (pushed as TAG)
#   oci:LAYOUT_DIR:artifact  Wasm artifact, config + module layers (pushed as TAG-artifact)
# The build is reproducible: the same module always gives the same digests. The digests are
# printed and written to LAYOUT_DIR.json.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wasm=${1:-${LOOPBACK_GUARD_WASM:-$ROOT/dist/loopback_guard.wasm}}
out=${2:-$ROOT/dist/oci}
[ -f "$wasm" ] || die "no module at $wasm (run make build)"
out=$(realpath -m "$out")

python3 "$ROOT/scripts/oci_layout.py" build --module "$wasm" --out "$out" >"$out.json"
module_sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["module_sha256"])' "$out.json")
image=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"])' "$out.json")
artifact=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["artifact"])' "$out.json")
log "module   sha256:$module_sha ($wasm)"
log "image    $image  oci:$out:image"
log "artifact $artifact  oci:$out:artifact"
log "WasmPlugin, once the image is pushed as REGISTRY/REPO:TAG:"
log "  url: oci://REGISTRY/REPO:TAG  sha256: ${image#sha256:}"
