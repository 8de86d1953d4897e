#!/bin/sh
# The stand-in Envoy image's entrypoint, behaving as the official one does: arguments that start
# with '-' are Envoy's; started as root, the command runs as the `envoy` user unless ENVOY_UID=0.
set -e
if [ "${1#-}" != "$1" ]; then set -- envoy "$@"; fi
if [ "$(id -u)" = 0 ] && [ "${ENVOY_UID:-}" != 0 ]; then
  # Envoy writes its log to the container's stdout/stderr.
  chown envoy:envoy /dev/stdout /dev/stderr 2>/dev/null || true
  exec setpriv --reuid=envoy --regid=envoy --init-groups "$@"
fi
exec "$@"
