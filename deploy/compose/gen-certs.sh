#!/bin/sh
# Makes throw-away certificates for the compose demo: gen-certs.sh DIR
# A fresh CA on every run (its key is deleted once the certificates are signed), and three
# X509-SVIDs (EC P-256, one URI SAN each, not CAs, valid for 7 days):
#   server.pem / server-key.pem  the pod's own workload certificate, served by Envoy's loopback
#                                listener (URI SAN spiffe://$TRUST_DOMAIN/ns/$NAMESPACE/sa/$SERVICE_ACCOUNT,
#                                plus IP SAN 127.0.0.1 so that the app can verify it by address)
#   app.pem / app-key.pem        the rightful app: the pod's own identity, as istio-agent would
#                                hand it out (OUTPUT_CERTS)
#   rogue.pem / rogue-key.pem    another workload of the mesh (service account $ROGUE_SERVICE_ACCOUNT)
#   ca.pem                       the trust anchor
# Keys are left world-readable: Envoy and the app run as different users, and these exist only
# in the demo's volume. Never do this with real keys. Needs openssl (1.1.1 or later) and POSIX sh.
set -eu
dir=$1
td=${TRUST_DOMAIN:-cluster.local}
ns=${NAMESPACE:-demo}
sa=${SERVICE_ACCOUNT:-app}
rogue_sa=${ROGUE_SERVICE_ACCOUNT:-db}
days=7

mkdir -p "$dir"
rm -f "$dir"/*.pem
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022

cat >"$work/ca.cnf" <<CNF
[req]
distinguished_name = dn
prompt = no
[dn]
O = loopback-guard compose demo
CN = loopback-guard demo CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CNF
openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca-key.pem"
openssl req -new -x509 -sha256 -days "$days" -config "$work/ca.cnf" -extensions ca \
  -key "$work/ca-key.pem" -out "$dir/ca.pem"

# svid NAME SPIFFE_ID [EXTRA_SAN]
svid() {
  cat >"$work/$1.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = URI:$2${3:+, $3}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
  openssl ecparam -name prime256v1 -genkey -noout -out "$work/$1-key.ec"
  # PKCS#8, the form Envoy and curl both read.
  openssl pkcs8 -topk8 -nocrypt -in "$work/$1-key.ec" -out "$dir/$1-key.pem"
  openssl req -new -sha256 -key "$dir/$1-key.pem" -subj "/O=loopback-guard compose demo" -out "$work/$1.csr"
  openssl x509 -req -sha256 -days "$days" -in "$work/$1.csr" -CA "$dir/ca.pem" -CAkey "$work/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$work/$1.ext" -out "$dir/$1.pem" 2>/dev/null
  chmod 0444 "$dir/$1.pem" "$dir/$1-key.pem"
  echo "gen-certs.sh: $1: $2"
}

svid server "spiffe://$td/ns/$ns/sa/$sa" "IP:127.0.0.1"
svid app "spiffe://$td/ns/$ns/sa/$sa"
svid rogue "spiffe://$td/ns/$ns/sa/$rogue_sa"
chmod 0444 "$dir/ca.pem"
echo "gen-certs.sh: wrote $dir (CA key discarded)"
