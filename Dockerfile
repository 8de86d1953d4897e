# loopback-guard as an OCI image for Istio's WasmPlugin (the "compat" format: one layer holding
# plugin.wasm), for those who build images with Docker. The build context is dist/:
#
#   make build
#   docker build -f Dockerfile -t REGISTRY/loopback-guard:TAG dist    (BuildKit: add --provenance=false)
#   docker push REGISTRY/loopback-guard:TAG
#
# `make image` builds the same format (and the Wasm artifact variant) without Docker, and
# reproducibly, then this image with `docker build` where an engine runs (scripts/docker-image.sh,
# which checks its one layer is exactly plugin.wasm); docs/istio.md explains the formats and
# which digest goes into the WasmPlugin.
FROM scratch
COPY loopback_guard.wasm ./plugin.wasm
