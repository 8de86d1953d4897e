#!/usr/bin/env bash
# The Istio manifests for one Istio version, into dist/istio/, by `loopback-guard istio render`
# (cli/src/istio.rs says what changes with the version): ISTIO_VERSION=1.31 [ISTIO_RESOURCE=wasmplugin]
# [REGISTRY=host[:port]/repo TAG=tag] istio-manifests.sh
# With REGISTRY and TAG the module is pinned to the image `make image` built: url
# oci://REGISTRY:TAG and sha256 = the manifest digest in dist/oci (what `make push` pushes and
# checks). Without them the placeholder url and the all-zero digest stay, which never loads.
# The demo's namespace and workload (demo, app=demo-app); for your own workload run the command:
# loopback-guard istio render --istio-version V --namespace NS --workload LABELS --image REF.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=${ISTIO_OUT:-$ROOT/dist/istio}
args=(istio render --istio-version "${ISTIO_VERSION:-1.31}" --namespace demo --workload app=demo-app --with-demo --out "$out")
[ -z "${ISTIO_RESOURCE:-}" ] || args+=(--resource "$ISTIO_RESOURCE")
if [ -n "${REGISTRY:-}" ] || [ -n "${TAG:-}" ]; then
  [ -n "${REGISTRY:-}" ] && [ -n "${TAG:-}" ] || die "set both REGISTRY and TAG, or neither"
  layout=${OCI_LAYOUT:-$ROOT/dist/oci}
  [ -f "$layout/index.json" ] || die "no OCI layout at $layout: run make image (or make push)"
  digest=$(python3 - "$layout/index.json" <<'PY'
import json, sys
refs = [m["digest"] for m in json.load(open(sys.argv[1]))["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "image"]
sys.exit("no 'image' in the layout") if len(refs) != 1 else print(refs[0])
PY
  )
  args+=(--image "oci://$REGISTRY:$TAG@$digest")
fi
cd "$ROOT" && cargo run --locked --quiet -p loopback-guard-cli -- "${args[@]}"
