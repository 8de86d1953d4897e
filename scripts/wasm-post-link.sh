#!/usr/bin/env bash
# The post-link step of every module Envoy runs from this repository:
#
#   wasm-post-link.sh IN OUT EXPORT...
#
# writes IN to OUT exporting exactly EXPORT... (and nothing else), with what only the dropped
# exports reached removed, then optimised for size by binaryen's wasm-opt.
#
# Why: proxy-wasm-cpp-host looks every callback up by its export name once per VM
# (WasmBase::getFunctions in src/wasm.cc) and, per stream, returns at once without entering the
# VM when the export is missing (ContextBase::onResponseHeaders, onResponseBody, onLog, onDone...
# in src/context.cc). The Rust SDK exports all of them, so every stream would enter the VM for
# callbacks the filter leaves empty. docs/performance.md says which ones the filter keeps.
#
# Tools: binaryen's wasm-metadce (drops exports not named as roots, and the code only they
# reached), wasm-opt and wasm-dis, from the distribution's `binaryen` package, installed on first
# use. WASM_OPT_FLAGS overrides the optimisation flags (default below, see docs/performance.md).
# POST_LINK_KEEP_NAMES=1 keeps the function names (the `name` section; the code is the same), for
# the benchmark's table of the biggest functions (bench/wasm_sizes.py); never for a shipped module.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$#" -ge 3 ] || die "usage: $0 IN OUT EXPORT..."
in=$1 out=$2
shift 2
[ -f "$in" ] || die "no module at $in"

"$ROOT/scripts/setup.sh" binaryen

# The module's export names, one a line, sorted (wasm-dis prints `(export "name" (func ...))`).
exports_of() {
  wasm-dis "$1" | sed -n 's/^ (export "\([^"]*\)" .*/\1/p' | LC_ALL=C sort
}

wanted=$(printf '%s\n' "$@" | LC_ALL=C sort -u)
have=$(exports_of "$in")
# A name the module does not export is a typo or a changed SDK: never drop it silently.
missing=$(LC_ALL=C comm -23 <(echo "$wanted") <(echo "$have"))
[ -z "$missing" ] || die "$in does not export: $(echo "$missing" | tr '\n' ' ')"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# metadce's graph: one root per export kept; every export not named is unreachable, so dropped.
{
  echo "["
  first=1
  while read -r name; do
    [ "$first" = 1 ] || echo ","
    first=0
    printf '{"name": "keep:%s", "root": true, "export": "%s"}' "$name" "$name"
  done <<<"$wanted"
  echo "]"
} >"$work/graph.json"
names=()
strip=(--strip-debug --strip-producers)
[ "${POST_LINK_KEEP_NAMES:-0}" = 1 ] && names=(--debuginfo) strip=(--strip-producers --debuginfo)
wasm-metadce "${names[@]}" "$in" -f "$work/graph.json" -o "$work/trimmed.wasm" >"$work/unused.txt"
# shellcheck disable=SC2086 # WASM_OPT_FLAGS is a list of flags
wasm-opt ${WASM_OPT_FLAGS:--O3 -ocimfs 0} "${strip[@]}" "$work/trimmed.wasm" -o "$work/out.wasm"

got=$(exports_of "$work/out.wasm")
[ "$got" = "$wanted" ] ||
  die "post-link left other exports than asked for: got $(echo "$got" | tr '\n' ' ')"
# Copy only when changed, so OUT's timestamp means "the module changed".
mkdir -p "$(dirname "$out")"
cmp -s "$work/out.wasm" "$out" || cp "$work/out.wasm" "$out"
