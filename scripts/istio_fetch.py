#!/usr/bin/env python3
"""istio-agent's fetch rules for an oci:// Wasm module, written again here from Istio's source and
run against real registries (scripts/test-oci.sh starts them):

  istio_fetch.py selftest                      the realm rule on a table of WWW-Authenticate values
  istio_fetch.py run --plain HOST:PORT --repo R --tag T --artifact-tag T2 --digest D --artifact-digest D2
                 --module SHA [--tls HOST:PORT --creds USER:PW --tls-open HOST:PORT]

What is reproduced, and where it was read (istio/istio at 1.31.0-rc.0 unless said; the same code
at 1.29.6 and 1.30.3):
- pkg/wasm/imagefetcher.go, ssrfProtectionTransport / validateAllRealms / validateRealmURL: every
  401 answer's WWW-Authenticate values are scanned for each `realm="..."`; a realm whose scheme is
  not http/https, without a host, naming `localhost` or `metadata.google.internal`, or an IP
  literal that is private, loopback or link-local ends the fetch with "rejected unsafe bearer
  realm: ...". The check runs on the registry's first 401 (the /v2/ ping), before credentials
  are used, so it applies to Basic challenges too (htpasswd's `Basic realm="<label>"`). Present
  from 1.27.8, 1.28.5, 1.29.1 and in every 1.30 and 1.31 tag; absent from 1.26.x and earlier
  patches.
- PrepareFetch: HTTPS first; when the error says the server gave an HTTP response, again over
  plain HTTP (any registry, whatever WASM_INSECURE_REGISTRIES says). TLS certificates are
  verified unless the URL's host[:port] is in WASM_INSECURE_REGISTRIES or it is "*"
  (pkg/wasm/cache.go allowInsecure(u.Host); pilot/cmd/pilot-agent/options/options.go).
- The digest: the image's digest is the sha256 of the manifest as served, compared with the
  plugin's `sha256` (when set) before any layer is read (pkg/wasm/cache.go getOrFetch):
  "module downloaded from <url> has checksum <got>, which does not match: <want>".
- The format (binaryFetcher in PrepareFetch): a Docker schema 2 manifest must end with a
  `application/vnd.docker.image.rootfs.diff.tar.gzip` layer; otherwise the last layer as
  `application/vnd.oci.image.layer.v1.tar+gzip` ("compat"), the first tar entry whose base name is
  `plugin.wasm`; failing that exactly two layers, one `application/vnd.module.wasm.content.layer.v1+wasm`
  taken raw ("oci"). Then the module must start with the Wasm magic (isValidWasmBinary, cache.go).

Not reproduced (so not tested here): go-containerregistry itself (its token exchange, redirects,
retries, how it picks http for some hosts), istio-agent's cache and pull policy, pull secrets
from Kubernetes, master's dial-time IP blocking (pkg/wasm/ssrf.go, after 1.31.0-rc.0: link-local
and cloud metadata addresses, BLOCKED_CIDRS_IN_WASM_FETCH), and the size limit.
"""

import argparse
import base64
import gzip
import hashlib
import io
import ipaddress
import json
import socket
import ssl
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_MAGIC = b"\0asm"

# Go's net.IP.IsPrivate, IsLoopback, IsLinkLocalUnicast (IPv4-mapped addresses as IPv4).
BLOCKED_NETWORKS = [ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",  # private
    "127.0.0.0/8", "::1/128",  # loopback
    "169.254.0.0/16", "fe80::/10",  # link-local unicast
)]


class FetchError(Exception):
    pass


def realms(www_authenticate):
    """Every `realm="..."` in one header value, found as Istio finds them: the literal
    `realm="` anywhere (case-sensitive), up to the next double quote (validateAllRealms). This
    is Istio's scan, kept on purpose: the point is to predict what istio-agent refuses."""
    found, rest = [], www_authenticate
    while True:
        start = rest.find('realm="')
        if start < 0:
            return found
        rest = rest[start + len('realm="'):]
        end = rest.find('"')
        if end < 0:
            return found
        found.append(rest[:end])
        rest = rest[end + 1:]


def ip_literal(host):
    """net.ParseIP: an IPv4 or IPv6 literal (no zone), else None."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def go_hostname(netloc):
    """Go's url.URL.Hostname() of a host[:port] (userinfo removed): the port cut at the last colon
    when what follows is a port, then the brackets of an IPv6 literal. The case is kept."""
    host = netloc.rpartition("@")[2]
    colon = host.rfind(":")
    if colon >= 0 and host[colon + 1:].isdigit() or host.endswith(":"):
        host = host[:colon]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def realm_refusal(realm):
    """Why validateRealmURL refuses `realm`, or None."""
    try:
        u = urllib.parse.urlsplit(realm)
    except ValueError as err:
        return f"invalid realm URL: {err}"
    scheme = u.scheme.lower()  # Go's url.Parse lowercases the scheme
    if scheme not in ("http", "https"):
        return f'realm scheme "{scheme}" not allowed'
    host = go_hostname(u.netloc)
    if not host:
        return "realm missing host"
    # Istio compares these two names exactly, case and all.
    if host == "metadata.google.internal":
        return "realm targets cloud metadata service"
    if host == "localhost":
        return "realm targets localhost"
    ip = ip_literal(host)
    if ip is not None and any(ip in n for n in BLOCKED_NETWORKS if n.version == ip.version):
        return "realm targets private/loopback/link-local IP"
    return None


def check_challenges(headers):
    for value in headers:
        for realm in realms(value):
            why = realm_refusal(realm)
            if why:
                raise FetchError(f"rejected unsafe bearer realm: {why}")


class Registry:
    """A registry client doing what istio-agent's fetch does to one registry: the transport
    check on every 401, Basic credentials (a dockerconfigjson entry's user and password),
    HTTPS verified unless insecure, and the plain-HTTP fallback."""

    def __init__(self, host, creds=None, insecure=False, ca_file=None):
        self.host, self.creds, self.insecure, self.ca_file = host, creds, insecure, ca_file
        self.scheme = "https"
        self.used_fallback = False

    def _context(self):
        if self.insecure:
            return ssl._create_unverified_context()  # noqa: SLF001 (what InsecureSkipVerify does)
        return ssl.create_default_context(cafile=self.ca_file)

    def _request(self, path, accept=None, auth=False):
        url = f"{self.scheme}://{self.host}{path}"
        headers = {"Accept": accept} if accept else {}
        if auth and self.creds:
            headers["Authorization"] = "Basic " + base64.b64encode(self.creds.encode()).decode()
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._context() if self.scheme == "https" else None) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    def get(self, path, accept=None):
        try:
            status, headers, body = self._request(path, accept)
        except urllib.error.URLError as err:
            reason = err.reason
            # Go: "http: server gave HTTP response to HTTPS client"; here the TLS layer sees an
            # HTTP answer where a ServerHello belongs.
            if self.scheme == "https" and isinstance(reason, ssl.SSLError) and \
                    reason.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"):
                self.scheme, self.used_fallback = "http", True
                return self.get(path, accept)
            raise FetchError(f"could not fetch manifest: {reason}") from err
        if status == 401:
            check_challenges(headers.get_all("WWW-Authenticate") or [])
            if self.creds:
                status, headers, body = self._request(path, accept, auth=True)
                if status == 401:
                    check_challenges(headers.get_all("WWW-Authenticate") or [])
        return status, headers, body


def fetch(url, sha256=None, creds=None, insecure_registries=(), ca_file=None):
    """istio-agent's fetch of an oci:// URL: (module bytes, manifest digest hex, variant)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "oci":
        raise FetchError(f"unsupported scheme {u.scheme}")
    insecure = "*" in insecure_registries or u.netloc in insecure_registries
    repo, _, tag = u.path.lstrip("/").rpartition(":")
    reg = Registry(u.netloc, creds, insecure, ca_file)
    status, _, _ = reg.get("/v2/")
    if status not in (200, 401):
        raise FetchError(f"could not fetch manifest: /v2/ answered {status}")
    status, headers, body = reg.get(f"/v2/{repo}/manifests/{tag}", accept=f"{OCI_MANIFEST}, {DOCKER_MANIFEST}")
    if status != 200:
        raise FetchError(f"could not fetch manifest: {status} {body[:120]!r}")
    digest = hashlib.sha256(body).hexdigest()
    if sha256 and digest != sha256:
        raise FetchError(f"module downloaded from {url} has checksum {digest}, which does not match: {sha256}")
    manifest = json.loads(body)
    layers = manifest.get("layers") or []

    def blob(layer):
        s, _, data = reg.get(f"/v2/{repo}/blobs/{layer['digest']}")
        if s != 200 or "sha256:" + hashlib.sha256(data).hexdigest() != layer["digest"]:
            raise FetchError(f"could not fetch layer {layer['digest']}: {s}")
        return data

    if manifest.get("mediaType") == DOCKER_MANIFEST:
        if not layers or layers[-1]["mediaType"] != DOCKER_LAYER:
            raise FetchError("could not extract Wasm file from the image as Docker container")
        module, variant = plugin_wasm(blob(layers[-1])), "docker"
    else:
        errors = []
        module = variant = None
        if layers and layers[-1]["mediaType"] == OCI_LAYER:
            try:
                module, variant = plugin_wasm(blob(layers[-1])), "compat"
            except FetchError as err:
                errors.append(f"could not parse as compat variant: {err}")
        else:
            errors.append("could not parse as compat variant: invalid media type "
                          f"{layers[-1]['mediaType'] if layers else None} (expect {OCI_LAYER})")
        if module is None:
            wasm = [layer for layer in layers if layer["mediaType"] == WASM_LAYER]
            if len(layers) != 2:
                errors.append(f"could not parse as oci variant: number of layers must be 2 but got {len(layers)}")
            elif not wasm:
                errors.append(f"could not parse as oci variant: could not find the layer of type {WASM_LAYER}")
            else:
                module, variant = blob(wasm[0]), "oci"
        if module is None:
            raise FetchError("the given image is in invalid format as an OCI image: " + "; ".join(errors))
    if len(module) < 8 or module[:4] != WASM_MAGIC:
        raise FetchError(f"fetched Wasm binary from {url} is invalid")
    return module, digest, variant, reg.used_fallback


def plugin_wasm(layer):
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
            for member in tar:
                if member.name.rsplit("/", 1)[-1] == "plugin.wasm" and member.isfile():
                    return tar.extractfile(member).read()
    except (OSError, EOFError, tarfile.TarError) as err:
        raise FetchError(f"failed to parse layer as tar.gz: {err}") from err
    raise FetchError("plugin.wasm not found in the archive")


# --- a small pusher, to put malformed images into the local registry -------------------------

def push(host, repo, tag, layers, media_type=OCI_MANIFEST):
    """Pushes blobs and a manifest over plain HTTP; returns the manifest digest (hex)."""
    def upload(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        req = urllib.request.Request(f"http://{host}/v2/{repo}/blobs/uploads/", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=10) as r:
            location = urllib.parse.urljoin(f"http://{host}/", r.headers["Location"])
        sep = "&" if "?" in location else "?"
        put = urllib.request.Request(f"{location}{sep}digest={digest}", method="PUT", data=data,
                                     headers={"Content-Type": "application/octet-stream"})
        urllib.request.urlopen(put, timeout=10).close()
        return {"digest": digest, "size": len(data)}
    config = upload(b"{}")
    manifest = {"schemaVersion": 2, "mediaType": media_type,
                "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                "layers": [dict(upload(data), mediaType=mt) for mt, data in layers]}
    body = json.dumps(manifest, sort_keys=True).encode()
    put = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{tag}", method="PUT", data=body,
                                 headers={"Content-Type": media_type})
    urllib.request.urlopen(put, timeout=10).close()
    return hashlib.sha256(body).hexdigest()


def tar_gz(files):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue())


# --- the checks --------------------------------------------------------------------------------

REALM_CASES = [
    # (WWW-Authenticate value, refused?, why) -- what istio-agent 1.27.8+/1.28.5+/1.29.1+/1.30/1.31 does
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io"', None, "public token service"),
    ('Bearer realm="https://registry.example.com/service/token",service="harbor-registry"', None, "DNS name"),
    ('Bearer realm="https://harbor.harbor.svc.cluster.local/service/token"', None, "in-cluster DNS name: only IP literals are checked"),
    ('Basic realm="https://registry.example.com/"', None, "Basic with an https URL as its label"),
    ('Basic realm="Registry Realm"', 'realm scheme "" not allowed', "htpasswd's default realm label"),
    ('Basic realm="loopback-guard-test"', 'realm scheme "" not allowed', "any plain label"),
    ('Bearer realm="http://10.0.0.5:5001/auth"', "realm targets private/loopback/link-local IP", "private IP"),
    ('Bearer realm="https://192.168.1.10/token"', "realm targets private/loopback/link-local IP", "private IP"),
    ('Bearer realm="https://127.0.0.1:5001/auth"', "realm targets private/loopback/link-local IP", "loopback"),
    ('Bearer realm="https://[::1]:5001/auth"', "realm targets private/loopback/link-local IP", "IPv6 loopback"),
    ('Bearer realm="https://[::ffff:10.1.2.3]/auth"', "realm targets private/loopback/link-local IP", "IPv4-mapped"),
    ('Bearer realm="http://169.254.169.254/latest"', "realm targets private/loopback/link-local IP", "link-local"),
    ('Bearer realm="https://localhost:5001/auth"', "realm targets localhost", "localhost"),
    ('Bearer realm="http://metadata.google.internal/x"', "realm targets cloud metadata service", "metadata"),
    ('Bearer realm="file:///etc/passwd"', 'realm scheme "file" not allowed', "scheme"),
    ('Bearer realm="https://auth.example.com/t", Basic realm="Registry Realm"', 'realm scheme "" not allowed',
     "every challenge is checked"),
    ('Bearer service="x"', None, "no realm: nothing to check"),
]


def selftest():
    failed = 0
    for header, want, why in REALM_CASES:
        try:
            check_challenges([header])
            got = None
        except FetchError as err:
            got = str(err).removeprefix("rejected unsafe bearer realm: ")
        if got != want:
            failed += 1
            print(f"istio_fetch: FAIL: {header!r}: got {got!r}, want {want!r} ({why})", file=sys.stderr)
    print(f"istio_fetch: realm rule: {len(REALM_CASES) - failed} cases as istio-agent decides them", file=sys.stderr)
    return failed


def expect_error(what, text, call):
    try:
        call()
    except FetchError as err:
        if text not in str(err):
            raise SystemExit(f"istio_fetch: {what}: error {err!r}, expected one containing {text!r}")
        print(f"istio_fetch: ok: {what}: refused: {err}", file=sys.stderr)
        return
    raise SystemExit(f"istio_fetch: {what}: fetched, but istio-agent refuses it ({text})")


def run(args):
    passed = 0
    plain = f"oci://{args.plain}/{args.repo}"
    for tag, digest, variant in ((args.tag, args.digest, "compat"), (args.artifact_tag, args.artifact_digest, "oci")):
        module, got, found, fallback = fetch(f"{plain}:{tag}", sha256=digest)
        if (got, found, hashlib.sha256(module).hexdigest(), fallback) != (digest, variant, args.module, True):
            raise SystemExit(f"istio_fetch: {tag}: digest {got}, variant {found}, fallback {fallback}")
        print(f"istio_fetch: ok: {plain}:{tag}: over plain HTTP, digest pinned, {variant} variant, "
              f"module = the build", file=sys.stderr)
        passed += 1
    expect_error("a sha256 that is not the manifest digest", "which does not match",
                 lambda: fetch(f"{plain}:{args.tag}", sha256=args.module))
    passed += 1
    # Malformed images in the same registry, each refused as istio-agent refuses it.
    wasm = b"\0asm\x01\0\0\0"
    bad = {
        "three-layers": [("application/vnd.module.wasm.config.v1+json", b"{}"), (WASM_LAYER, wasm), (WASM_LAYER, wasm)],
        "no-plugin-wasm": [(OCI_LAYER, tar_gz({"module.wasm": wasm}))],
        "not-wasm": [(OCI_LAYER, tar_gz({"plugin.wasm": b"#!/bin/sh\n"}))],
        "unknown-layer": [("application/octet-stream", wasm), ("application/vnd.module.wasm.config.v1+json", b"{}")],
    }
    want = {"three-layers": "number of layers must be 2 but got 3", "no-plugin-wasm": "plugin.wasm not found",
            "not-wasm": "is invalid", "unknown-layer": "could not find the layer of type"}
    for tag, layers in bad.items():
        digest = push(args.plain, args.repo, tag, layers)
        expect_error(f"image {tag}", want[tag], lambda: fetch(f"{plain}:{tag}", sha256=digest))
        passed += 1
    nested = push(args.plain, args.repo, "nested", [(OCI_LAYER, tar_gz({"a/b/plugin.wasm": wasm}))])
    module, _, variant, _ = fetch(f"{plain}:nested", sha256=nested)
    if (module, variant) != (wasm, "compat"):
        raise SystemExit("istio_fetch: a plugin.wasm in a subdirectory is taken by its base name")
    print("istio_fetch: ok: plugin.wasm found by its base name (a/b/plugin.wasm)", file=sys.stderr)
    passed += 1

    if args.tls:
        url = f"oci://{args.tls}/{args.repo}:tls"
        # htpasswd's Basic challenge carries a label, not a URL: refused at the first 401,
        # credentials or not, and whatever WASM_INSECURE_REGISTRIES says.
        expect_error("htpasswd registry (realm label), with credentials, insecure", 'realm scheme "" not allowed',
                     lambda: fetch(url, sha256=args.digest, creds=args.creds, insecure_registries=(args.tls,)))
        expect_error("TLS registry of a private CA, not in WASM_INSECURE_REGISTRIES", "CERTIFICATE_VERIFY_FAILED",
                     lambda: fetch(url, sha256=args.digest, creds=args.creds))
        passed += 2
    if args.tls_open:
        url = f"oci://{args.tls_open}/{args.repo}:tls"
        module, got, variant, _ = fetch(url, sha256=args.digest, creds=args.creds, insecure_registries=("*",))
        if got != args.digest or hashlib.sha256(module).hexdigest() != args.module:
            raise SystemExit(f"istio_fetch: {url}: digest {got}")
        print(f"istio_fetch: ok: {url}: Basic realm set to an https URL passes the realm rule; "
              f"fetched with credentials, {variant} variant, digest pinned", file=sys.stderr)
        expect_error("the same registry without credentials", "could not fetch manifest: 401",
                     lambda: fetch(url, sha256=args.digest, insecure_registries=("*",)))
        passed += 2
    return passed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("selftest")
    r = sub.add_parser("run")
    for name in ("--plain", "--repo", "--tag", "--artifact-tag", "--digest", "--artifact-digest", "--module"):
        r.add_argument(name, required=True)
    r.add_argument("--tls")
    r.add_argument("--tls-open")
    r.add_argument("--creds")
    args = parser.parse_args()
    if args.command == "selftest":
        return 1 if selftest() else 0
    for name in ("digest", "artifact_digest"):
        setattr(args, name, getattr(args, name).removeprefix("sha256:"))
    failed = selftest()
    passed = run(args)
    print(f"istio_fetch: {passed} fetches decided as istio-agent decides them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    sys.exit(main())
