#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with cargo-fuzz (libFuzzer), each target for a bounded
# time, and fails on any crash: fuzz.sh [TARGET...]   (default: every target in fuzz/)
#
#   FUZZ_SECONDS    seconds per target (default 180)
#   FUZZ_SANITIZER  address (default) or none; set none if the toolchain has no ASan runtime
#
# cargo-fuzz needs nightly-only compiler flags; with a stable toolchain RUSTC_BOOTSTRAP=1 lets
# them through. The committed seeds in fuzz/corpus/<target> are read, never written: what the
# fuzzer finds goes to a corpus in the cache, kept between runs on the same machine. Seeds that
# carry certificates are made here, at run time, with openssl (throwaway keys, never written).
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz <target> fuzz/artifacts/<target>/crash-...
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds="${FUZZ_SECONDS:-180}"
sanitizer="${FUZZ_SANITIZER:-address}"
fuzz_root="$CACHE/cargo-fuzz"
work="$CACHE/fuzz-corpus"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive integer, not '$seconds'"

install_cargo_fuzz() {
  command -v cargo >/dev/null || die "no cargo: install Rust with rustup (https://rustup.rs)"
  command -v c++ >/dev/null || apt_install g++ # libFuzzer itself is C++, built by libfuzzer-sys
  command -v openssl >/dev/null || apt_install openssl
  if command -v cargo-fuzz >/dev/null; then return; fi
  if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
    log "installing cargo-fuzz into $fuzz_root"
    cargo install --quiet --locked cargo-fuzz --root "$fuzz_root"
  fi
  export PATH="$fuzz_root/bin:$PATH"
}

# Percent-encodes all but ASCII letters and digits, as Envoy encodes XFCC's Cert.
url_encode() {
  local s=$1 i c hex out=""
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [a-zA-Z0-9]) out+=$c ;;
      *) printf -v hex '%%%02X' "'$c" && out+=$hex ;;
    esac
  done
  printf '%s' "$out"
}

# A leaf certificate in DER: make_cert NAME SUBJECT_ALT_NAME [BASIC_CONSTRAINTS [-addext ...]]
# (openssl's default configuration would make every self-signed certificate a CA).
make_cert() {
  local name=$1 san=$2 basic=${3:-CA:FALSE}
  shift $(($# < 3 ? $# : 3))
  local args=(-x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null
    -subj "/CN=$name" -days 36500 -outform DER -out "$certs/$name.der"
    -addext "basicConstraints=critical,$basic")
  if [ -n "$san" ]; then args+=(-addext "subjectAltName=$san"); fi
  openssl req "${args[@]}" "$@" 2>/dev/null || die "openssl could not make the $name seed certificate"
}

# Seeds that need whole certificates, for every target that reads one.
make_seeds() {
  local app=spiffe://cluster.local/ns/shop/sa/app rogue=spiffe://cluster.local/ns/shop/sa/rogue
  certs=$(mktemp -d)
  trap 'rm -rf "$certs"' EXIT
  make_cert app "URI:$app" CA:FALSE -addext "keyUsage=critical,digitalSignature,keyEncipherment"
  make_cert rogue "URI:$rogue,DNS:rogue.local"
  make_cert two-uris "URI:$rogue,URI:$app"
  make_cert ca "URI:$app" CA:TRUE -addext "keyUsage=critical,keyCertSign,cRLSign"
  make_cert dns-only "DNS:app.local"
  make_cert no-san ""
  make_cert uppercase "URI:spiffe://Cluster.local/ns/shop/sa/app"
  make_cert trailing-slash "URI:$app/"
  make_cert https "URI:https://app.local/x"

  mkdir -p "$work"/{certificate,pem,xfcc,decision}
  local der name pem digest i header
  for der in "$certs"/*.der; do
    name=$(basename "$der" .der)
    pem=$(openssl x509 -inform DER -in "$der")$'\n'
    digest=$(sha256sum "$der" | cut -d' ' -f1)
    cp "$der" "$work/certificate/seed-$name"
    printf '%s' "$pem" >"$work/pem/seed-$name"
    url_encode "$pem" >"$work/pem/seed-$name-url"
    header="By=$app;Hash=$digest;Cert=\"$(url_encode "$pem")\";Subject=\"CN=$name\";URI=$app"
    printf '%s\n%s' "$digest" "$header" >"$work/xfcc/seed-$name"
    printf '%s\n%s,%s' "$digest" "Hash=$digest;URI=$rogue" "$header" >"$work/xfcc/seed-$name-forged"
    # decision: config, flags A (0 property PEM, 0x40 URL-encoded, 0x80 XFCC), flags B, clock,
    # two empty blobs, then the certificate.
    for i in 0 1 2 3 4 5 6 7; do
      for flags in '\x00' '\x40' '\x80'; do
        { printf '%b' "\\x0$i$flags\\x00\\x00\\x00\\x00" && cat "$der"; } >"$work/decision/seed-$name-$i-${flags:2}"
      done
    done
  done
  # The rightful certificate with other facts: flags B (source, path, metadata, local SAN, header)
  # and the clock.
  for flags in '\x00\x02\x00' '\x00\x03\x00' '\x00\x04\x00' '\x00\x08\x00' '\x00\x10\x00' \
    '\x00\x20\x00' '\x00\x40\x00' '\x00\x80\x00' '\x00\x00\x02' '\x00\x00\x03' '\x00\x00\x04' \
    '\x02\x00\x00' '\x04\x00\x00' '\x08\x00\x00' '\x20\x00\x00' '\x30\x00\x00'; do
    for i in 0 3 5; do
      { printf '%b' "\\x0$i$flags\\x00\\x00" && cat "$certs/app.der"; } \
        >"$work/decision/seed-app-$i-$(printf '%s' "$flags" | tr -d '\\x')"
    done
  done
}

install_cargo_fuzz
export RUSTC_BOOTSTRAP=1
cd "$ROOT"
mapfile -t all < <(cargo fuzz list --fuzz-dir fuzz)
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=("${all[@]}")
make_seeds

log "building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build --fuzz-dir fuzz -s "$sanitizer" >&2

summary=() failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "fuzz/corpus/$target"
  out="$work/$target.log"
  log "fuzzing $target for ${seconds}s"
  rc=0
  # The first corpus directory receives what the fuzzer finds; the committed seeds come second.
  cargo fuzz run --fuzz-dir fuzz -s "$sanitizer" "$target" "$work/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"$out" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units:/ { n = $2 } END { print n + 0 }' "$out")
  corpus=$(find "$work/$target" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    summary+=("$(printf '%-12s %12s executions  %6s corpus files  ok' "$target" "$execs" "$corpus")")
  else
    tail -n 60 "$out" >&2
    summary+=("$(printf '%-12s %12s executions  %6s corpus files  CRASH (exit %s, log %s)' \
      "$target" "$execs" "$corpus" "$rc" "$out")")
    failed+=("$target")
  fi
done

printf '%s\n' "${summary[@]}"
[ "${#failed[@]}" -eq 0 ] || die "crashes in: ${failed[*]} (inputs in fuzz/artifacts/)"
log "no crash in ${#targets[@]} targets, ${seconds}s each"
