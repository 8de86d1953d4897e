# loopback-guard: every entry point. Each target installs what it needs (scripts/setup.sh) and is
# safe to run again.

SHELL := /bin/bash
.DEFAULT_GOAL := build

WASM := dist/loopback_guard.wasm
export LOOPBACK_GUARD_WASM := $(CURDIR)/$(WASM)

.PHONY: setup build test test-unit test-wasm test-integration demo lint clean

setup:
	scripts/setup.sh

build:
	scripts/build-wasm.sh

## Every test: the pure core natively and on wasm32, then the filter in a real Envoy.
test: test-unit test-wasm test-integration

test-unit:
	scripts/setup.sh rust
	cargo test --locked -p loopback-guard-core

test-wasm:
	scripts/test-wasm.sh

test-integration: build
	ENVOY_BIN="$$(scripts/envoy.sh)" cargo test --locked -p loopback-guard-integration -- --test-threads 2

## The main job: the filter in a local Envoy, rightful and rogue requests, the decisions shown.
demo: build
	ENVOY_BIN="$$(scripts/envoy.sh)" cargo run --locked --quiet -p loopback-guard-integration --bin demo

lint:
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

clean:
	rm -rf dist target
