#!/usr/bin/env bash
# Shared by the scripts that use the Docker Engine (sourced, after lib.sh): whether there is one,
# and what to do when there is not.

# Prints why the Docker Engine cannot be used here, or nothing if it can.
docker_engine_problem() {
  local out
  if ! command -v docker >/dev/null; then
    echo "no docker command"
  elif ! out=$(docker info --format '{{.ServerVersion}}' 2>&1); then
    echo "the Docker Engine is not running or not reachable ($(echo "$out" | tail -n 1))"
  fi
}

# docker_skip_or_die NAME PROBLEM: without an engine, NAME is skipped with one line (so a machine
# without Docker still runs `make test`), but under CI=true on a machine with Docker installed,
# CI must run it: then it is an error.
docker_skip_or_die() {
  local name=$1 problem=$2
  if [ "${CI:-}" = true ] &&
    { command -v docker >/dev/null || command -v dockerd >/dev/null || [ -S /var/run/docker.sock ]; }; then
    die "$problem; CI must run $name where Docker is installed"
  fi
  echo "$name: skipped: $problem"
}
