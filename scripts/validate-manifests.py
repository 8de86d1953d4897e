#!/usr/bin/env python3
"""Checks what deploy/ ships, offline, the way the real consumers would.

  validate-manifests.py [--envoy ENVOY] [--wasm MODULE] [--self-test] [--no-consistency] [FILE ...]

1. Every Kubernetes manifest (default: deploy/istio/*.yaml; or the FILEs given) is validated:
   Istio kinds against the openAPIV3Schema of their kind and version in
   deploy/schemas/istio-crds.yaml, with unknown fields rejected as `kubectl apply` does
   (strict field validation) and the schema's CEL rules (x-kubernetes-validations) evaluated;
   core kinds (Deployment, Service, ...) against Kubernetes' own schemas (kubernetes-validate,
   strict).
2. The manifests are checked against each other (unless --no-consistency): the listener asks
   for the WasmPlugin by the name Istio serves it under, the selectors pick the demo pod, the
   ports agree, the pod shares the certificate directory istio-agent writes, the
   security-relevant settings are fail-closed.
3. With --envoy: the EnvoyFilter's listener is put into a bootstrap shaped like an Istio
   sidecar's (deploy/istio/testdata/sidecar-bootstrap.yaml) and checked with
   `envoy --mode validate`, twice: as written (the filter fetched over ECDS), and with the
   filter inlined the way istio-agent delivers the WasmPlugin (--wasm: the built module, its
   pluginConfig as configuration). Validate mode starts the module's VM and runs its
   configure step, so the real module must accept the real pluginConfig.
4. Without FILEs, also: the Dockerfile's shape, and deploy/compose/compose.yaml against
   deploy/schemas/compose-spec.json and against what the demo relies on (the official Envoy
   image of the tested version, the shared Envoy template with every placeholder set, the app
   in Envoy's network namespace).
5. --self-test then breaks the shipped files one way at a time (SELF_TESTS, COMPOSE_SELF_TESTS)
   and requires each break to be reported, naming it.

Prints every problem found and exits non-zero if there is any; the last line counts the checks
("N passed, N failed").
"""

import argparse
import copy
import functools
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.environ.get("LOOPBACK_GUARD_SCHEMAS", os.path.join(ROOT, "deploy", "schemas"))
# Kubernetes' schemas of this version check the core kinds; the manifests use nothing newer.
KUBERNETES_VERSION = "1.33.0"

# The contract with the module (README's configuration table, core/src/config.rs).
ROOT_ID = "loopback_guard"
PLUGIN_FIELDS = {
    "mode", "principal", "principal_source", "trust_domain", "allowed_principals", "exempt_paths",
    "require_loopback", "log_allowed", "certificate_cache_size",
}
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
WASMPLUGIN_ECDS_PREFIX = "extensions.istio.io/wasmplugin/"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

problems = []
passed = [0]


def ok(text):
    passed[0] += 1
    print(f"ok: {text}")


def problem(where, text):
    problems.append(f"{where}: {text}")


def rel(path):
    return os.path.relpath(path, ROOT)


# ---------------------------------------------------------------------------------------------
# CRD schemas


@functools.cache
def load_crd_schemas():
    schemas = {}
    with open(os.path.join(SCHEMAS, "istio-crds.yaml")) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def structural_to_json_schema(node):
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema that rejects unknown fields.

    The API server prunes fields a structural schema does not declare, and kubectl's default
    strict field validation turns that into an error: so does this. `nullable` becomes a null
    type; x-kubernetes-* keywords are ignored by jsonschema (CEL rules are evaluated separately).
    """
    if isinstance(node, list):
        return [structural_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": DNS_SUBDOMAIN.pattern},
        "namespace": {"type": "string", "pattern": DNS_LABEL.pattern},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def crd_validator(open_api, api_version, kind):
    schema = structural_to_json_schema(open_api)
    schema.setdefault("properties", {})
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = OBJECT_META
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return jsonschema.Draft7Validator(schema)


# The CEL rules (x-kubernetes-validations) the Istio schemas carry, evaluated in Python. A rule
# that is not listed here fails the check rather than passing unchecked.
def _url_rule(v):
    def scheme_ok(u):
        try:
            return urllib.parse.urlparse(u).scheme in ("", "http", "https", "oci", "file")
        except ValueError:
            return False
    return scheme_ok(v) if "://" in v else scheme_ok("http://" + v)


def _count(obj, keys):
    return sum(1 for k in keys if k in obj)


CEL_RULES = {
    '!self.contains("*")': lambda v: "*" not in v,
    'self.all(key, !key.contains("*"))': lambda v: all("*" not in k for k in v),
    "self.all(key, key.size() != 0)": lambda v: all(len(k) != 0 for k in v),
    "self.size() == 0": lambda v: len(v) == 0,
    "0 < self && self <= 65535": lambda v: 0 < v <= 65535,
    '(has(self.valueFrom) ? self.valueFrom : "") != "HOST" || !has(self.value)':
        lambda v: v.get("valueFrom", "") != "HOST" or "value" not in v,
    "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda v: _count(v, ("selector", "targetRef", "targetRefs")) <= 1,
    "(has(self.workloadSelector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda v: _count(v, ("workloadSelector", "targetRefs")) <= 1,
    'has(self.context) ? ((self.context == "WAYPOINT") ? has(self.waypoint) : !has(self.waypoint)) : !has(self.waypoint)':
        lambda v: ("waypoint" in v) if v.get("context") == "WAYPOINT" else ("waypoint" not in v),
}
URL_RULE_PREFIX = "isURL(self) ? (url(self).getScheme() in"


def check_cel(schema, value, path, where):
    if not isinstance(schema, dict):
        return
    for rule in schema.get("x-kubernetes-validations", []):
        text = " ".join(rule["rule"].split())
        fn = _url_rule if text.startswith(URL_RULE_PREFIX) else CEL_RULES.get(text)
        if fn is None:
            problem(where, f"{path}: CEL rule not known to this validator, cannot check it: {text}")
        elif not fn(value):
            problem(where, f"{path}: {rule.get('message', text)}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                check_cel(props[key], sub, f"{path}.{key}", where)
            elif isinstance(extra, dict):
                check_cel(extra, sub, f"{path}.{key}", where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            check_cel(schema["items"], sub, f"{path}[{i}]", where)


# ---------------------------------------------------------------------------------------------
# Kubernetes manifests


def load_manifests(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    docs.append((f"{rel(path)}#{i}", doc))
    return docs


def validate_manifest(where, doc, crd_schemas):
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not api_version or not kind:
        problem(where, "no apiVersion/kind: not a Kubernetes manifest")
        return
    open_api = crd_schemas.get((api_version, kind))
    if open_api is not None:
        validator = crd_validator(open_api, api_version, kind)
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            path = ".".join(str(p) for p in err.absolute_path) or "(root)"
            problem(where, f"{kind} {api_version}: {path}: {err.message}")
        check_cel(open_api, doc, kind, where)
        return
    import kubernetes_validate  # only needed for core kinds
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        problem(where, f"{kind} {api_version}: no schema for this kind (neither an Istio CRD nor core)")
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path) or "(root)"
        problem(where, f"{kind} {api_version}: {path}: {err.message}")


def only(docs, kind):
    found = [(w, d) for w, d in docs if d.get("kind") == kind]
    return found


def dig(obj, *keys, default=None):
    for key in keys:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def loopback_listener(envoy_filter):
    """The listener the EnvoyFilter ADDs (there must be exactly one)."""
    adds = [p for p in envoy_filter["spec"].get("configPatches", [])
            if p.get("applyTo") == "LISTENER" and dig(p, "patch", "operation") == "ADD"]
    if len(adds) != 1:
        return None
    return adds[0]["patch"]["value"]


def http_filters(listener):
    return dig(listener, "filter_chains", 0, "filters", 0, "typed_config", "http_filters", default=[])


def check_consistency(docs):
    plugins, filters = only(docs, "WasmPlugin"), only(docs, "EnvoyFilter")
    deployments = [(w, d) for w, d in only(docs, "Deployment") if d["metadata"]["name"] == "demo-app"]
    if len(plugins) != 1 or len(filters) != 1 or len(deployments) != 1:
        problem("deploy/istio", f"expected one WasmPlugin, one EnvoyFilter and the demo-app Deployment, found "
                f"{len(plugins)}, {len(filters)}, {len(deployments)}")
        return None
    (pw, plugin), (fw, envoy_filter), (dw, deployment) = plugins[0], filters[0], deployments[0]
    spec = plugin["spec"]

    # The plugin: fail closed, the module's root id, only the module's own configuration fields.
    expect = {"phase": "AUTHN", "failStrategy": "FAIL_CLOSE", "pluginName": ROOT_ID}
    for key, want in expect.items():
        if spec.get(key) != want:
            problem(pw, f"spec.{key} is {spec.get(key)!r}, expected {want!r}")
    if not spec.get("url", "").startswith("oci://"):
        problem(pw, "spec.url must be an oci:// URL")
    if not re.fullmatch(r"[0-9a-f]{64}", spec.get("sha256", "")):
        problem(pw, "spec.sha256 must be set (64 hex digits): without it the image is not verified")
    unknown = sorted(set(spec.get("pluginConfig", {})) - PLUGIN_FIELDS)
    if unknown:
        problem(pw, f"spec.pluginConfig has fields the module does not know: {unknown}")
    if dig(spec, "pluginConfig", "mode", default="enforce") != "enforce":
        problem(pw, "spec.pluginConfig.mode must be enforce in the shipped manifest")
    env = {e["name"]: e for e in dig(spec, "vmConfig", "env", default=[])}
    if dig(env, "TRUST_DOMAIN", "valueFrom") != "HOST":
        problem(pw, "spec.vmConfig.env must pass TRUST_DOMAIN from the host (valueFrom: HOST)")

    # The listener: on loopback, client certificate required, Istio's SDS secrets, the plugin
    # first and fetched by the name Istio serves it under.
    listener = loopback_listener(envoy_filter)
    if listener is None:
        problem(fw, "expected exactly one LISTENER ADD patch")
        return None
    if dig(envoy_filter, "spec", "configPatches", 0, "match", "context") != "SIDECAR_OUTBOUND":
        problem(fw, "the listener patch must match context SIDECAR_OUTBOUND (sidecars only)")
    address = dig(listener, "address", "socket_address", "address")
    port = dig(listener, "address", "socket_address", "port_value")
    if address != "127.0.0.1":
        problem(fw, f"listener address is {address!r}, expected 127.0.0.1")
    tls = dig(listener, "filter_chains", 0, "transport_socket", "typed_config", default={})
    if tls.get("require_client_certificate") is not True:
        problem(fw, "the listener must require a client certificate")
    common = tls.get("common_tls_context", {})
    cert_sds = dig(common, "tls_certificate_sds_secret_configs", 0, default={})
    ca_sds = dig(common, "combined_validation_context", "validation_context_sds_secret_config", default={})
    for sds, name in ((cert_sds, "default"), (ca_sds, "ROOTCA")):
        cluster = dig(sds, "sds_config", "api_config_source", "grpc_services", 0, "envoy_grpc", "cluster_name")
        if sds.get("name") != name or cluster != "sds-grpc":
            problem(fw, f"SDS secret {name!r} must come from the sds-grpc cluster (found {sds.get('name')!r} "
                    f"from {cluster!r})")
    filters_ = http_filters(listener)
    ecds_name = f"{WASMPLUGIN_ECDS_PREFIX}{plugin['metadata'].get('namespace')}.{plugin['metadata']['name']}"
    first = filters_[0] if filters_ else {}
    if first.get("name") != ecds_name:
        problem(fw, f"the first HTTP filter must be {ecds_name!r} (how Istio serves this WasmPlugin), "
                f"found {first.get('name')!r}")
    discovery = first.get("config_discovery", {})
    if sorted(discovery.get("type_urls", [])) != sorted([WASM_TYPE, RBAC_TYPE]):
        problem(fw, "the plugin's config_discovery must accept the Wasm type and the RBAC type "
                "(istio-agent's deny-all stand-in when the module cannot be loaded)")
    if dig(discovery, "config_source", "initial_fetch_timeout") != "0s":
        problem(fw, "initial_fetch_timeout must be 0s: the listener must not serve before the plugin loaded")
    if not filters_ or filters_[-1].get("name") != "envoy.filters.http.router":
        problem(fw, "the last HTTP filter must be the router")

    # Same namespace, and the selectors pick the demo pod.
    namespaces = {plugin["metadata"].get("namespace"), envoy_filter["metadata"].get("namespace"),
                  deployment["metadata"].get("namespace")}
    if len(namespaces) != 1:
        problem("deploy/istio", f"WasmPlugin, EnvoyFilter and Deployment must share a namespace, found {namespaces}")
    pod_labels = dig(deployment, "spec", "template", "metadata", "labels", default={})
    for where, selector in ((pw, dig(spec, "selector", "matchLabels")),
                            (fw, dig(envoy_filter, "spec", "workloadSelector", "labels"))):
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problem(where, f"selector {selector} does not select the demo-app pod (labels {pod_labels})")

    # The WasmPlugin's match keeps Istio from inserting it into its own listeners: it must name
    # exactly the loopback listener's port, server side.
    match = spec.get("match", [])
    ports = [p.get("number") for m in match for p in m.get("ports", [])]
    if [m.get("mode") for m in match] != ["SERVER"] or ports != [port]:
        problem(pw, f"spec.match must be mode SERVER, ports [{port}] (the loopback listener), found {match}")

    # The pod: istio-agent writes its certificate where the sidecar mounts the shared volume.
    annotations = dig(deployment, "spec", "template", "metadata", "annotations", default={})
    proxy_config = yaml.safe_load(annotations.get("proxy.istio.io/config", "")) or {}
    output = dig(proxy_config, "proxyMetadata", "OUTPUT_CERTS")
    mounts = json.loads(annotations.get("sidecar.istio.io/userVolumeMount", "[]"))
    if isinstance(mounts, dict):  # the annotation's older map form
        mounts = [dict(m, name=n) for n, m in mounts.items()]
    sidecar_mount = [m for m in mounts if m.get("mountPath") == output]
    volumes = {v["name"]: v for v in dig(deployment, "spec", "template", "spec", "volumes", default=[])}
    if not output or len(sidecar_mount) != 1:
        problem(dw, "proxy.istio.io/config proxyMetadata.OUTPUT_CERTS must be a path that "
                "sidecar.istio.io/userVolumeMount mounts")
    else:
        volume = sidecar_mount[0]["name"]
        if dig(volumes, volume, "emptyDir", "medium") != "Memory":
            problem(dw, f"volume {volume!r} must be an in-memory emptyDir (it holds the private key)")
        app_mounts = [m for c in dig(deployment, "spec", "template", "spec", "containers", default=[])
                      for m in c.get("volumeMounts", []) if m["name"] == volume]
        if not app_mounts or not all(m.get("readOnly") for m in app_mounts):
            problem(dw, f"the app container must mount {volume!r}, read-only")
    return listener, plugin


# ---------------------------------------------------------------------------------------------
# Envoy


def inline_plugin(listener, plugin, wasm):
    """The listener with the WasmPlugin inlined as istio-agent hands it to Envoy over ECDS."""
    listener = copy.deepcopy(listener)
    spec = plugin["spec"]
    env = dig(spec, "vmConfig", "env", default=[])
    config = {
        "name": f"{plugin['metadata']['namespace']}.{plugin['metadata']['name']}",
        "root_id": spec["pluginName"],
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(spec.get("pluginConfig", {}), separators=(",", ":")),
        },
        "failure_policy": {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN",
                           "FAIL_RELOAD": "FAIL_RELOAD"}[spec.get("failStrategy", "FAIL_CLOSE")],
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": os.path.abspath(wasm)}},
            "environment_variables": {
                "host_env_keys": [e["name"] for e in env if e.get("valueFrom") == "HOST"],
                "key_values": {e["name"]: e.get("value", "") for e in env if e.get("valueFrom", "INLINE") == "INLINE"},
            },
        },
    }
    filters_ = http_filters(listener)
    filters_[0] = {"name": filters_[0]["name"], "typed_config": {"@type": WASM_TYPE, "config": config}}
    return listener


def envoy_validate(envoy, listener, label, say=print):
    with open(os.path.join(ROOT, "deploy", "istio", "testdata", "sidecar-bootstrap.yaml")) as f:
        bootstrap = yaml.safe_load(f)
    bootstrap["static_resources"]["listeners"] = [listener]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bootstrap.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(bootstrap, f, sort_keys=False)
        env = dict(os.environ, TRUST_DOMAIN=os.environ.get("TRUST_DOMAIN", "cluster.local"))
        proc = subprocess.run([envoy, "--mode", "validate", "-c", path, "-l", "warning",
                               "--base-id-path", os.path.join(tmp, "base-id")],
                              check=False, capture_output=True, text=True, env=env, timeout=300)
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        problem(f"envoy --mode validate ({label})", f"exit {proc.returncode}\n{out}")
    else:
        say(f"ok: envoy --mode validate ({label}): {out.splitlines()[-1] if out else 'OK'}")


# ---------------------------------------------------------------------------------------------


def validate_compose(path, doc=None, say=None):
    """The compose file: the Compose Specification's schema, then what the demo relies on."""
    ok_ = say or ok
    with open(os.path.join(SCHEMAS, "compose-spec.json")) as f:
        schema = json.load(f)
    if doc is None:
        with open(path) as f:
            doc = yaml.safe_load(f)
    where = rel(path)
    before = len(problems)
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        problem(where, f"{'.'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}")
    if len(problems) == before:
        ok_(f"{where} (compose-spec.json)")
    else:
        return doc

    before = len(problems)
    services = doc.get("services", {})
    with open(os.path.join(ROOT, "scripts", "lib.sh")) as f:
        envoy_version = re.search(r'ENVOY_VERSION="\$\{ENVOY_VERSION:-([0-9.]+)\}"', f.read())
    want_image = f"envoyproxy/envoy:v{envoy_version.group(1)}" if envoy_version else None
    if dig(services, "envoy", "image") != want_image:
        problem(where, f"services.envoy.image is {dig(services, 'envoy', 'image')!r}, expected {want_image!r} "
                "(the Envoy version the tests run, scripts/lib.sh)")
    if dig(services, "app", "network_mode") != "service:envoy":
        problem(where, "services.app must share Envoy's network namespace (network_mode: service:envoy)")
    # The one Envoy config: the template the integration tests run, every placeholder filled in.
    template = os.path.join(ROOT, "envoy-config", "loopback-guard.yaml")
    mounts = dig(services, "render", "volumes", default=[])
    sources = [os.path.normpath(os.path.join(os.path.dirname(path), m["source"] if isinstance(m, dict)
                                             else m.split(":")[0])) for m in mounts]
    if template not in sources:
        problem(where, f"services.render must mount {rel(template)} (no second copy of the Envoy config)")
    env = dig(services, "render", "environment", default={})
    if os.path.exists(template):
        with open(template) as f:
            placeholders = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", f.read()))
        missing = sorted(placeholders - set(env))
        if missing:
            problem(where, f"services.render.environment does not set {missing}, placeholders of {rel(template)}")
    # Envoy before 1.38 gives the filter the client certificate only in the XFCC element this
    # proxy sets; any other mode forwards the client's own header or sets none.
    if "FORWARD_CLIENT_CERT" in env and env["FORWARD_CLIENT_CERT"] != "SANITIZE_SET":
        problem(where, f"services.render.environment.FORWARD_CLIENT_CERT is {env['FORWARD_CLIENT_CERT']!r}, "
                "expected 'SANITIZE_SET'")
    port = str(env.get("LISTEN_PORT"))
    if not str(dig(services, "app", "environment", "GUARD_URL", default="")).endswith(f"127.0.0.1:{port}"):
        problem(where, f"services.app.environment.GUARD_URL must be https://127.0.0.1:{port} (LISTEN_PORT)")
    if len(problems) == before:
        ok_(f"{where}: the official Envoy image of the tested version, the shared template fully "
           "rendered, the app in Envoy's network namespace")
    return doc


def check_dockerfile(path):
    """Docker is not on every machine: check the Dockerfile's shape, FROM scratch plus one COPY
    of the build's module to plugin.wasm (the file istio-agent extracts from the last layer)."""
    with open(path) as f:
        lines = [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]
    want = [["FROM", "scratch"], ["COPY", "loopback_guard.wasm", "./plugin.wasm"]]
    if lines != want:
        problem(rel(path), f"expected exactly {[' '.join(w) for w in want]}, found {[' '.join(l) for l in lines]}")
    else:
        ok(f"{rel(path)}: FROM scratch, one COPY of the module to plugin.wasm (context dist/)")


def check_all(docs, envoy=None, wasm=None, consistency=True, quiet=False):
    """Runs every check on parsed manifests; returns the problems found."""
    problems.clear()
    say = (lambda text: None) if quiet else (lambda text: ok(text[4:]) if text.startswith("ok: ") else print(text))
    crd_schemas = load_crd_schemas()
    for where, doc in docs:
        before = len(problems)
        validate_manifest(where, doc, crd_schemas)
        if len(problems) == before:
            say(f"ok: {where} {doc.get('kind')} {dig(doc, 'metadata', 'name')}")
    if not consistency:
        return list(problems)
    before = len(problems)
    found = check_consistency(docs)
    if len(problems) == before:
        say("ok: the manifests agree with each other (names, selectors, ports, certificates, fail-closed)")
    if envoy and found:
        listener, plugin = found
        envoy_validate(envoy, listener, "EnvoyFilter listener as written, plugin over ECDS", say)
        if wasm:
            if not os.path.isfile(wasm):
                problem("--wasm", f"{wasm}: no such file (run make build)")
            else:
                envoy_validate(envoy, inline_plugin(listener, plugin, wasm),
                               "plugin inlined as istio-agent delivers it, with the built module", say)
    return list(problems)


def _set(path, value):
    def mutate(doc):
        obj = doc
        for key in path[:-1]:
            obj = obj[key]
        if value is _DELETE:
            del obj[path[-1]]
        else:
            obj[path[-1]] = value
    return mutate


_DELETE = object()
_LISTENER = ["spec", "configPatches", 0, "patch", "value"]
_HCM = _LISTENER + ["filter_chains", 0, "filters", 0, "typed_config"]
_TLS = _LISTENER + ["filter_chains", 0, "transport_socket", "typed_config"]

# (name, kind to mutate, mutation, text the problem must contain, what it needs: None, "envoy"
# or "wasm" for Envoy with the built module)
SELF_TESTS = [
    ("unknown WasmPlugin field", "WasmPlugin", _set(["spec", "failStrategyy"], "FAIL_CLOSE"),
     "'failStrategyy' was unexpected", None),
    ("fail-open plugin", "WasmPlugin", _set(["spec", "failStrategy"], "FAIL_OPEN"), "expected 'FAIL_CLOSE'", None),
    ("bad enum", "WasmPlugin", _set(["spec", "phase"], "AUTHENTICATION"), "is not one of", None),
    ("sha256 not hex", "WasmPlugin", _set(["spec", "sha256"], "sha256:abc"), "does not match", None),
    ("no sha256", "WasmPlugin", _set(["spec", "sha256"], _DELETE), "spec.sha256 must be set", None),
    ("value with valueFrom HOST (CEL)", "WasmPlugin",
     _set(["spec", "vmConfig", "env", 0, "value"], "cluster.local"), "value may only be set when valueFrom is INLINE",
     None),
    ("url scheme (CEL)", "WasmPlugin", _set(["spec", "url"], "ftp://example.com/x"), "url must have schema", None),
    ("plugin field the module does not know", "WasmPlugin", _set(["spec", "pluginConfig", "principle"], "x"),
     "fields the module does not know", None),
    ("plugin attached to Istio's own listeners", "WasmPlugin", _set(["spec", "match"], _DELETE),
     "spec.match must be mode SERVER", None),
    ("selector misses the pod", "WasmPlugin", _set(["spec", "selector", "matchLabels", "app"], "other"),
     "does not select the demo-app pod", None),
    ("unknown EnvoyFilter field", "EnvoyFilter", _set(["spec", "workloadSelectorr"], {}), "was unexpected", None),
    ("wrong ECDS name", "EnvoyFilter", _set(_HCM + ["http_filters", 0, "name"], "loopback-guard"),
     "the first HTTP filter must be", None),
    ("client certificate optional", "EnvoyFilter", _set(_TLS + ["require_client_certificate"], False),
     "must require a client certificate", None),
    ("listener on all interfaces", "EnvoyFilter", _set(_LISTENER + ["address", "socket_address", "address"],
                                                        "0.0.0.0"), "expected 127.0.0.1", None),
    ("unknown Deployment field", "Deployment", _set(["spec", "template", "spec", "bogus"], 1), "'bogus' was unexpected",
     None),
    ("certificate volume on disk", "Deployment", _set(["spec", "template", "spec", "volumes", 0, "emptyDir"], {}),
     "in-memory emptyDir", None),
    ("Envoy rejects a misspelt field", "EnvoyFilter", _set(_HCM + ["forward_client_cert_detail"], "SANITIZE_SET"),
     "forward_client_cert_detail", "envoy"),
    ("the module rejects the pluginConfig", "WasmPlugin", _set(["spec", "pluginConfig", "principal_source"], "static"),
     'principal: is required when principal_source is "static"', "wasm"),
]


# (name, mutation of the parsed compose file, text the problem must contain)
COMPOSE_SELF_TESTS = [
    ("unknown compose key", _set(["services", "app", "netwrk_mode"], "service:envoy"),
     "'netwrk_mode' does not match"),
    ("app in its own network namespace", _set(["services", "app", "network_mode"], _DELETE),
     "network_mode: service:envoy"),
    ("another Envoy version", _set(["services", "envoy", "image"], "envoyproxy/envoy:v1.39.0"),
     "the Envoy version the tests run"),
    ("a template placeholder left unset", _set(["services", "render", "environment", "PLUGIN_CONFIG"], _DELETE),
     "does not set ['PLUGIN_CONFIG']"),
    ("XFCC forwarded from the client",
     _set(["services", "render", "environment", "FORWARD_CLIENT_CERT"], "ALWAYS_FORWARD_ONLY"),
     "expected 'SANITIZE_SET'"),
    ("a second copy of the Envoy config",
     _set(["services", "render", "volumes", 0], "./envoy.yaml:/template/loopback-guard.yaml:ro"),
     "no second copy of the Envoy config"),
]


def self_test(docs, envoy, wasm):
    """Each row breaks one thing in the shipped manifests; the checks must notice, naming it."""
    failures = 0
    for name, kind, mutate, expect, needs in SELF_TESTS:
        if (needs and not envoy) or (needs == "wasm" and not wasm):
            print(f"skip: self-test {name!r} (needs --envoy{' and --wasm' if needs == 'wasm' else ''})")
            continue
        mutated = copy.deepcopy(docs)
        targets = [d for _, d in mutated if d.get("kind") == kind and
                   (kind != "Deployment" or d["metadata"]["name"] == "demo-app")]
        mutate(targets[0])
        found = check_all(mutated, envoy=envoy if needs else None, wasm=wasm if needs == "wasm" else None,
                          quiet=True)
        if any(expect in p for p in found):
            ok(f"self-test {name!r} caught")
        else:
            failures += 1
            print(f"FAIL: self-test {name!r}: no problem mentioning {expect!r}; got {found}", file=sys.stderr)
    compose = os.path.join(ROOT, "deploy", "compose", "compose.yaml")
    if os.path.exists(compose):
        with open(compose) as f:
            original = yaml.safe_load(f)
        for name, mutate, expect in COMPOSE_SELF_TESTS:
            doc = copy.deepcopy(original)
            mutate(doc)
            problems.clear()
            validate_compose(compose, doc, say=lambda text: None)
            if any(expect in p for p in problems):
                ok(f"self-test {name!r} caught")
            else:
                failures += 1
                print(f"FAIL: self-test {name!r}: no problem mentioning {expect!r}; got {list(problems)}",
                      file=sys.stderr)
    problems.clear()
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", help="Envoy binary for --mode validate")
    parser.add_argument("--wasm", help="the built module, to validate the inlined filter with it")
    parser.add_argument("--no-consistency", action="store_true",
                        help="only schema checks (for extra files such as a rendered WasmPlugin)")
    parser.add_argument("--self-test", action="store_true",
                        help="also break the manifests one way at a time and expect each to be caught")
    parser.add_argument("files", nargs="*", help="manifests to check (default: deploy/istio/*.yaml)")
    args = parser.parse_args()

    paths = args.files or sorted(glob.glob(os.path.join(ROOT, "deploy", "istio", "*.yaml")))
    docs = load_manifests(paths)
    found = check_all(docs, envoy=args.envoy, wasm=args.wasm, consistency=not args.no_consistency)

    if not args.files:
        check_dockerfile(os.path.join(ROOT, "Dockerfile"))
    compose = os.path.join(ROOT, "deploy", "compose", "compose.yaml")
    if not args.files and os.path.exists(compose):
        validate_compose(compose)
        found = list(problems) if problems else found

    if found:
        print(f"\n{len(found)} problem(s):", file=sys.stderr)
        for p in found:
            print(f"  {p}", file=sys.stderr)
        print(f"validate-manifests: {passed[0]} passed, {len(found)} failed")
        return 1
    failed = self_test(docs, args.envoy, args.wasm) if args.self_test else 0
    print(f"validate-manifests: {passed[0]} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
