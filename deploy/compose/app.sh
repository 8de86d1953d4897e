#!/bin/sh
# The app of the compose demo. It shares Envoy's network namespace (as a container shares its
# pod's), so the guarded listener is at 127.0.0.1. It makes the three kinds of request once and
# prints what happened:
#   the rightful app     its own identity's certificate  -> 200 from the backend
#   a rogue workload     another identity's certificate  -> 403 from loopback-guard
#   no certificate at all                                -> refused by Envoy's TLS handshake
# Exits 0 only if all three went as expected. Needs curl and POSIX sh.
set -u
url=${GUARD_URL:-https://127.0.0.1:16443}
certs=${CERT_DIR:-/certs}
tries=${WAIT_SECONDS:-30}

# status NAME [CURL ARGS...]: prints the HTTP status, or "refused" if no HTTP exchange happened.
status() {
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$certs/ca.pem" "$@" "$url/" 2>/dev/null)
  if [ -z "$code" ] || [ "$code" = 000 ]; then echo refused; else echo "$code"; fi
}

# Envoy may still be starting: wait until the rightful request gets any HTTP answer.
i=0
while [ "$(status --cert "$certs/app.pem" --key "$certs/app-key.pem")" = refused ]; do
  i=$((i + 1))
  if [ "$i" -ge "$tries" ]; then echo "app.sh: no answer from $url after ${tries}s"; exit 1; fi
  sleep 1
done

failed=0
check() {
  name=$1 want=$2
  shift 2
  got=$(status "$@")
  if [ "$got" = "$want" ]; then verdict=ok; else verdict="UNEXPECTED (wanted $want)"; failed=1; fi
  printf '%-44s %-8s %s\n' "$name" "$got" "$verdict"
}

echo "app.sh: requests to $url"
check "rightful app (its own SPIFFE ID)" 200 --cert "$certs/app.pem" --key "$certs/app-key.pem"
check "rogue workload (another SPIFFE ID)" 403 --cert "$certs/rogue.pem" --key "$certs/rogue-key.pem"
check "no client certificate" refused
if [ "$failed" -eq 0 ]; then echo "app.sh: all as expected"; else echo "app.sh: NOT as expected"; fi
exit "$failed"
