#!/usr/bin/env bash
# Pushes both images of an OCI layout (scripts/oci-image.sh) with skopeo:
#   REGISTRY=host[:port]/repo TAG=tag oci-push.sh      (or: oci-push.sh host[:port]/repo tag)
#   image     -> REGISTRY:TAG            (the one deploy/istio/wasmplugin.yaml pulls)
#   artifact  -> REGISTRY:TAG-artifact
# Digests are preserved (skopeo refuses to push if it would have to change them), so what the
# registry serves has exactly the digests `make image` printed. Afterwards the digest served
# for REGISTRY:TAG is checked and a WasmPlugin with url and sha256 filled in is written to
# $WASMPLUGIN_OUT (default dist/wasmplugin.yaml), and every Istio manifest for $ISTIO_VERSION
# (default 1.31; scripts/istio-manifests.py) to $ISTIO_OUT (default: istio/ beside it).
#
# Transport and credentials:
#   a registry on 127.0.0.1, localhost or [::1] is spoken to in plain HTTP; any other with TLS
#   and certificate verification (REGISTRY_TLS_VERIFY=false to override, for a lab registry);
#   REGISTRY_CREDS=user:password   handed to skopeo in a temporary auth file (0600)
#   REGISTRY_AUTHFILE=path         passed as skopeo --dest-authfile (e.g. after `skopeo login`)
#   REGISTRY_CERT_DIR=dir          passed as skopeo --dest-cert-dir: a private CA (*.crt), or a
#                                  client certificate (*.cert, *.key), for the registry's TLS
#   OCI_LAYOUT=dir                 the layout to push (default dist/oci)
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

registry=${1:-${REGISTRY:-}}
tag=${2:-${TAG:-}}
layout=${OCI_LAYOUT:-$ROOT/dist/oci}
out=${WASMPLUGIN_OUT:-$ROOT/dist/wasmplugin.yaml}
istio_out=${ISTIO_OUT:-$(dirname "$out")/istio}
if [ -z "$registry" ] || [ -z "$tag" ]; then die "usage: REGISTRY=host[:port]/repo TAG=tag $0"; fi
[[ "$registry" == */* ]] || die "REGISTRY must name a repository too: host[:port]/repo, got $registry"
[[ "$registry" != *://* ]] || die "REGISTRY is host[:port]/repo, without a scheme: $registry"
# The tag grammar of the distribution spec, with room for the -artifact suffix.
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,118}$ ]] || die "not a valid tag: $tag"
[ -f "$layout/index.json" ] || die "no OCI layout at $layout (run make image)"
command -v skopeo >/dev/null || apt_install skopeo

host=${registry%%/*}
case "$host" in
  127.0.0.1 | 127.0.0.1:* | localhost | localhost:* | "[::1]" | "[::1]:"*) tls=false ;;
  *) tls=${REGISTRY_TLS_VERIFY:-true} ;;
esac
# REGISTRY_CREDS goes to skopeo in a private auth file, not on its command line (where any
# user of the machine could read it in the process list).
authfile=${REGISTRY_AUTHFILE:-}
if [ -n "${REGISTRY_CREDS:-}" ]; then
  [ -z "$authfile" ] || die "set REGISTRY_CREDS or REGISTRY_AUTHFILE, not both"
  authfile=$(mktemp)
  trap 'rm -f "$authfile"' EXIT
  chmod 600 "$authfile"
  python3 -c 'import base64, json, os, sys
auth = base64.b64encode(os.environ["REGISTRY_CREDS"].encode()).decode()
print(json.dumps({"auths": {sys.argv[1]: {"auth": auth}}}))' "$host" >"$authfile"
fi
auth=()
inspect_auth=()
if [ -n "$authfile" ]; then auth+=(--dest-authfile "$authfile"); inspect_auth+=(--authfile "$authfile"); fi
if [ -n "${REGISTRY_CERT_DIR:-}" ]; then
  auth+=(--dest-cert-dir "$REGISTRY_CERT_DIR")
  inspect_auth+=(--cert-dir "$REGISTRY_CERT_DIR")
fi

# The digest a layout holds for a ref name.
layout_digest() {
  python3 - "$layout/index.json" "$1" <<'PY'
import json, sys
index = json.load(open(sys.argv[1]))
refs = [m["digest"] for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == sys.argv[2]]
sys.exit(f"no {sys.argv[2]!r} in the layout") if len(refs) != 1 else print(refs[0])
PY
}

for ref in image artifact; do
  dest="$registry:$tag"
  [ "$ref" = artifact ] && dest="$registry:$tag-artifact"
  want=$(layout_digest "$ref")
  log "pushing oci:$layout:$ref ($want) to $dest (tls-verify=$tls)"
  skopeo copy --quiet --preserve-digests --retry-times 3 --dest-tls-verify="$tls" "${auth[@]}" \
    "oci:$layout:$ref" "docker://$dest" >&2
  got=sha256:$(skopeo inspect --raw --tls-verify="$tls" "${inspect_auth[@]}" "docker://$dest" |
    sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$dest: the registry serves manifest $got, expected $want"
  log "ok: $dest is $got"
  [ "$ref" = image ] && image_digest=$got
done

# deploy/istio/wasmplugin.yaml with this image's url and digest. istio-agent checks sha256
# against the manifest digest of an oci:// image (not against the module file's sha256).
mkdir -p "$(dirname "$out")"
sed -e "s|^  url: .*|  url: oci://$registry:$tag|" \
  -e "s|^  sha256: .*|  sha256: \"${image_digest#sha256:}\"|" \
  "$ROOT/deploy/istio/wasmplugin.yaml" >"$out"
if ! grep -q "^  url: oci://$registry:$tag\$" "$out" || ! grep -q "${image_digest#sha256:}" "$out"; then
  die "could not fill in $out"
fi
log "wrote $out (url oci://$registry:$tag, sha256 ${image_digest#sha256:})"

# The same module for the chosen Istio version: the WasmPlugin or the TrafficExtension and the
# listener naming it as that version's istiod serves it.
istio_args=(--istio-version "${ISTIO_VERSION:-1.31}" --out "$istio_out"
  --url "oci://$registry:$tag" --sha256 "${image_digest#sha256:}")
[ -z "${ISTIO_RESOURCE:-}" ] || istio_args+=(--resource "$ISTIO_RESOURCE")
"$("$ROOT/scripts/py.sh")" "$ROOT/scripts/istio-manifests.py" "${istio_args[@]}"
log "wrote $istio_out for Istio ${ISTIO_VERSION:-1.31} (url oci://$registry:$tag)"
