# loopback-guard: every entry point. Each target installs what it needs (scripts/setup.sh) and is
# safe to run again.

SHELL := /bin/bash
.DEFAULT_GOAL := build

WASM := dist/loopback_guard.wasm
export LOOPBACK_GUARD_WASM := $(CURDIR)/$(WASM)

.PHONY: setup build test test-unit test-cli test-wasm test-abi test-fuzz test-integration test-matrix soak test-deploy test-oci test-compose demo image push fuzz bench bench-validate bench-core lint msrv clean istio-manifests test-xds

setup:
	scripts/setup.sh

build:
	scripts/build-wasm.sh

## Every test: the pure core natively and on wasm32, the `loopback-guard` command, the built
## module under a mock host, a short run of every fuzz target, the filter in a real Envoy (with
## the command's parity test), the shipped manifests, the OCI round trip and the compose stack on
## the Docker Engine.
test: test-unit test-cli test-wasm test-abi test-fuzz test-integration test-deploy test-oci test-compose

test-unit:
	scripts/setup.sh rust
	cargo test --locked -p loopback-guard-core -p loopback-guard

## The `loopback-guard` command (cli/): unit tests, and the built binary on good and bad input.
## Its parity with the filter in Envoy is in test-integration (integration/tests/cli_parity.rs).
test-cli:
	scripts/setup.sh rust
	cargo test --locked -p loopback-guard-cli

test-wasm:
	scripts/test-wasm.sh

## The built module under a mock proxy-wasm host (abi-host/, the wasmi interpreter): host calls
## answered with non-OK statuses, odd property bytes and a truncated header map; the module must
## deny with 403 and a reason, or refuse the configuration, and never trap.
test-abi: build
	scripts/setup.sh rust
	cargo test --locked -p loopback-guard-abi-host

test-integration: build
	scripts/setup.sh integration
	ENVOY_BIN="$$(scripts/envoy.sh)" cargo test --locked -p loopback-guard-integration -- --test-threads 2

## The integration suite on every supported Envoy version (1.36.4, 1.38.2, 1.40.0), each
## installed on demand into its own virtualenv; prints a summary per version and fails if any
## version fails (scripts/test-matrix.sh, docs/envoy-versions.md). Other versions:
## `make test-matrix ENVOY_MATRIX="1.37.0 1.39.3"`.
test-matrix: build
	ENVOY_MATRIX="$(ENVOY_MATRIX)" scripts/test-matrix.sh

SOAK_REQUESTS ?= 200000

## Memory under load (docs/vm-survival.md): 200 000 requests over 20 000 connections with a churn
## of 3 072 client certificates (three times the certificate cache), Envoy's RSS sampled and
## required to settle; then what one certificate cache entry costs Envoy. About 4 minutes on
## 2 cores. `make soak SOAK_REQUESTS=50000` for a shorter run; `make test` runs 20 000.
soak: build
	ENVOY_BIN="$$(scripts/envoy.sh)" LOOPBACK_GUARD_SOAK_REQUESTS=$(SOAK_REQUESTS) \
	  cargo test --locked -p loopback-guard-integration --test soak -- --include-ignored --nocapture --test-threads 1

## The main job: the filter in a local Envoy, rightful and rogue requests, the decisions shown.
demo: build
	ENVOY_BIN="$$(scripts/envoy.sh)" cargo run --locked --quiet -p loopback-guard-integration --bin demo

## OCI images of the module in dist/oci, without Docker: the tar+gzip image and the Wasm
## artifact (the two formats istio-agent pulls). Reproducible: same module, same digests.
## Then the Dockerfile's image with `docker build` on the Docker Engine, as
## DOCKER_IMAGE (default loopback-guard:dev), checked to hold exactly the module (skipped,
## saying so, where there is no engine).
image: build
	scripts/oci-image.sh
	DOCKER_IMAGE='$(DOCKER_IMAGE)' scripts/docker-image.sh >/dev/null

## Pushes both images with skopeo: make push REGISTRY=host[:port]/repo TAG=tag
## (TAG and TAG-artifact; plain HTTP for a loopback registry; REGISTRY_CREDS or
## REGISTRY_AUTHFILE for one that needs credentials, REGISTRY_CERT_DIR for a private CA).
## Writes dist/wasmplugin.yaml, filled in, and dist/istio/ for ISTIO_VERSION (make istio-manifests).
push: image
	@if [ -z "$(REGISTRY)" ] || [ -z "$(TAG)" ]; then \
	  echo "usage: make push REGISTRY=host[:port]/repo TAG=tag" >&2; exit 2; fi
	REGISTRY='$(REGISTRY)' TAG='$(TAG)' ISTIO_VERSION='$(ISTIO_VERSION)' ISTIO_RESOURCE='$(ISTIO_RESOURCE)' scripts/oci-push.sh

ISTIO_VERSION ?= 1.31

## The Istio manifests for one Istio version (1.26 to 1.31), into dist/istio/: the WasmPlugin
## (1.26-1.29) or the TrafficExtension (1.30+), the loopback listener naming it as that version's
## istiod serves it, the demo app and backend (docs/istio.md). With REGISTRY and TAG, the module's
## url and manifest digest are filled in from dist/oci (run `make image` first; `make push`
## does both). ISTIO_RESOURCE=wasmplugin keeps the WasmPlugin on 1.30+ (an internal name).
istio-manifests:
	ISTIO_VERSION='$(ISTIO_VERSION)' ISTIO_RESOURCE='$(ISTIO_RESOURCE)' REGISTRY='$(REGISTRY)' TAG='$(TAG)' \
	  scripts/istio-manifests.sh

## The xDS-fed sidecar-shaped Envoy cases alone (integration/tests/istio_sidecar.rs; `make test`
## runs them within test-integration).
test-xds: build
	scripts/setup.sh xds
	ENVOY_BIN="$$(scripts/envoy.sh)" cargo test --locked -p loopback-guard-integration --test istio_sidecar -- --test-threads 2

## deploy/ checked offline: Istio manifests against the CRD and Kubernetes schemas and each
## other, the EnvoyFilter's listener in `envoy --mode validate` (with the built module), the
## Dockerfile, the compose file against the Compose Specification, and the compose demo's
## scripts run for real without Docker.
test-deploy: build
	scripts/test-deploy.sh

## The OCI round trip: a real registry on 127.0.0.1, push, pull, formats and digests checked,
## then Envoy with the pulled module (rightful 200, rogue 403), and the Dockerfile's image built
## by `docker build`, pushed and pulled back.
test-oci: build
	scripts/test-oci.sh

## deploy/compose/compose.yaml, unchanged, brought up on the Docker Engine with Compose v2 and
## stand-in images built here (no registry to pull from): the app, an intruder in the same
## network namespace, the decision log, restarts and stops, `down -v` (scripts/test-compose.sh).
## About 30 s once the images are cached; skipped, saying so, without an engine.
test-compose: build
	scripts/test-compose.sh

FUZZ_SECONDS ?= 180
FUZZ_SMOKE_SECONDS ?= 5

## Every fuzz target for FUZZ_SMOKE_SECONDS (default 5) each: the targets build, run and
## do not crash on their seeds (cargo-fuzz is installed on first use).
test-fuzz:
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) scripts/fuzz.sh

## Fuzz every parser of untrusted input (XFCC, PEM, certificate, configuration, the whole
## decision, the command's manifest and log readers) with libFuzzer for FUZZ_SECONDS each (default 180); fails on any crash. One target:
## `make fuzz FUZZ_TARGETS=xfcc`.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh $(FUZZ_TARGETS)

## What the filter costs Envoy per request, against no filter, an empty wasm filter (as the SDK
## builds it, A1, and exporting only the guard's callbacks, A1-min) and native RBAC, in a real
## Envoy, ending with issue 11's goals table (docs/performance.md). A few minutes; BENCH_* scale it
## (integration/src/bin/bench/main.rs lists them). Run it on an otherwise idle machine.
## `make bench-validate`: every arm's Envoy config passes `envoy --mode validate` (seconds).
BENCH_ENV = ENVOY_BIN="$$(scripts/envoy.sh)" LOOPBACK_GUARD_BENCH_EMPTY_WASM="$$(bench/build-empty.sh)" \
  LOOPBACK_GUARD_BENCH_EMPTY_MIN_WASM="$$(bench/build-empty.sh min)" \
  LOOPBACK_GUARD_BENCH_FULL_WASM="$$(bench/build-full.sh)"

bench: build
	$(BENCH_ENV) cargo run --locked --quiet -p loopback-guard-integration --bin bench

bench-validate: build
	$(BENCH_ENV) cargo run --locked --quiet -p loopback-guard-integration --bin bench -- validate

## The pure core's micro-benchmarks (criterion), natively.
bench-core:
	scripts/setup.sh rust
	cargo bench --locked -p loopback-guard-core --bench core

## rustfmt, and clippy with warnings as errors natively, on wasm32-wasip1 and on fuzz/
## (scripts/lint.sh).
lint:
	scripts/lint.sh

## The workspace builds with the Rust version Cargo.toml states as its minimum (rust-version),
## installed with rustup on first use; skipped, saying so, if rustup cannot install it.
msrv:
	scripts/msrv.sh

clean:
	rm -rf dist target
