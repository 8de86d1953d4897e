#!/usr/bin/env bash
# Prints the path of a Python with the packages the deploy/ and OCI checks use, installing them
# into a virtualenv under $CACHE/py on first use (and again whenever the pins below change).
# Only the path goes to stdout (callers use `$(scripts/py.sh)`); everything else to stderr.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# jsonschema validates the manifests against deploy/schemas; kubernetes-validate carries
# Kubernetes' own schemas (Deployment, Service, ...) for offline strict validation; bcrypt makes
# the password file of the test registry that requires credentials (scripts/test-oci.sh).
PINS=(jsonschema==4.26.0 PyYAML==6.0.3 kubernetes-validate==1.37.0 bcrypt==4.3.0)
venv="$CACHE/py"
stamp="$venv/.pins"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${PINS[*]}" ]; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv # Debian ships venv's pip bootstrap separately
  fi
  log "installing ${PINS[*]} into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}" >&2
  echo "${PINS[*]}" >"$stamp"
fi
echo "$venv/bin/python"
