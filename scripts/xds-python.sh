#!/usr/bin/env bash
# Prints the path of a Python with a real xDS library, for the test control plane of the
# sidecar-shaped Envoy (integration/xds/control_plane.py), installing it into a virtualenv under
# $CACHE/xds on first use (and again whenever the pins change). Only the path goes to stdout.
# xds-protos is the Python code generated from Envoy's data-plane-api (every xDS message and the
# ADS and SDS services); grpcio serves them; PyYAML reads the rendered manifests.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PINS=(xds-protos==1.85.0 grpcio==1.85.1 protobuf==7.36.2 PyYAML==6.0.3)
venv="$CACHE/xds"
stamp="$venv/.pins"
# One installer at a time (tests in separate processes may ask together).
mkdir -p "$CACHE"
exec 9>"$CACHE/xds.lock"
flock 9

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
  log "installing ${PINS[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" >&2 || {
    rm -rf "$venv"
    die "could not install ${PINS[*]}"
  }
  echo "${PINS[*]}" >"$stamp"
fi
echo "$venv/bin/python"
