#!/usr/bin/env python3
"""Checks what deploy/ ships, offline, the way the real consumers would.

  validate-manifests.py [--envoy ENVOY] [--wasm MODULE] [--self-test] [--no-consistency]
                        [--istio-version V] [FILE ...]

Without FILEs it checks both families of Istio manifests: deploy/istio/*.yaml (the sources, and
the rendering for Istio 1.26-1.29: a WasmPlugin) and deploy/istio/istio-1.30-and-later/ with
deploy/istio's demo-app.yaml and backend.yaml (Istio 1.30+: a TrafficExtension); that both are
what `loopback-guard istio render` renders (cli/src/istio.rs, driven through
scripts/istio-manifests.py); and a fresh rendering for every supported Istio version 1.26 to 1.31
(and the translated-WasmPlugin variant on 1.30+), each through checks 1 and 2 and against that
version's own CRDs (deploy/istio/testdata/istio-crds-by-version.yaml, from each minor's
crd-all.gen.yaml); and that the renderer refuses the versions on either side (1.25, 1.32).

1. Every Kubernetes manifest (or the FILEs given) is validated:
   Istio kinds against the openAPIV3Schema of their kind and version in
   deploy/schemas/istio-crds.yaml, with unknown fields rejected as `kubectl apply` does
   (strict field validation) and the schema's CEL rules (x-kubernetes-validations) evaluated;
   core kinds (Deployment, Service, ...) against Kubernetes' own schemas (kubernetes-validate,
   strict).
2. The manifests are checked against each other (unless --no-consistency): the listener asks
   for the WasmPlugin or TrafficExtension by the name that Istio version's istiod serves it
   under (the rule is written out here, apart from the renderer's), the selectors pick the demo
   pod, the ports agree, the pod shares the certificate directory istio-agent writes, the
   security-relevant settings are fail-closed, and nothing in the listener can keep Envoy from
   becoming ready (a deny-all default for the plugin, applied without warming).
3. With --envoy: the EnvoyFilter's listener is put into a bootstrap shaped like an Istio
   sidecar's (deploy/istio/testdata/sidecar-bootstrap.yaml) and checked with
   `envoy --mode validate`, twice: as written (the filter fetched over ECDS), and with the
   filter inlined the way istio-agent delivers the WasmPlugin (--wasm: the built module, its
   pluginConfig as configuration). Validate mode starts the module's VM and runs its
   configure step, so the real module must accept the real pluginConfig.
4. Without FILEs, also: the Dockerfile's shape, and deploy/compose/compose.yaml against
   deploy/schemas/compose-spec.json and against what the demo relies on (every image
   ${VARIABLE:-official image}, the Envoy one of the tested version and also running certs and
   render, nothing installed at start, the shared Envoy template with every placeholder set,
   the app in Envoy's network namespace).
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from istio_model import (RBAC_TYPE, WASM_TYPE, dig, http_filters, inline_plugin, loopback_listener,  # noqa: E402
                         plugin_fields, validate_plugin_config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.environ.get("LOOPBACK_GUARD_SCHEMAS", os.path.join(ROOT, "deploy", "schemas"))
# Kubernetes' schemas of this version check the core kinds; the manifests use nothing newer.
KUBERNETES_VERSION = "1.33.0"

# The contract with the module (docs/configuration.md, core/src/config/).
ROOT_ID = "loopback_guard"
ROUTER = "envoy.filters.http.router"

# What istiod serves a plugin resource under over ECDS, by Istio minor version: 1.26-1.29 serve
# WasmPlugins (pilot/pkg/model/extensions.go, WasmPluginResourceNamePrefix); 1.30+ serve only
# TrafficExtensions, a WasmPlugin as the TrafficExtension "<name>~istio-translated-wasmplugin"
# (pilot/pkg/networking/core/extension_config_builder.go, pilot/pkg/config/kube/extensions/
# translate.go; read at 1.26.0 to 1.29.6, 1.30.0 to 1.31.0-rc.0 and master 86c9f01). Kept apart
# from the renderer (cli/src/istio.rs) and from scripts/istio_model.py on purpose: each checks
# the others (this is the one deliberately independent copy of the rule).
ISTIO_VERSIONS = range(26, 32)
# Just outside: 1.25 (misspelt prefix) and 1.32 (newer than the newest tag read) must be refused.
REFUSED_VERSIONS = ("1.25", "1.32", "1.32.0-alpha.0")
FAMILY_A, FAMILY_B = 29, 31  # the checked-in examples: deploy/istio/, deploy/istio/istio-1.30-and-later/
FAMILY_B_DIR = os.path.join(ROOT, "deploy", "istio", "istio-1.30-and-later")


def expected_ecds_name(minor, kind, namespace, name):
    if minor < 30:
        return f"extensions.istio.io/wasmplugin/{namespace}.{name}" if kind == "WasmPlugin" else None
    suffix = "~istio-translated-wasmplugin" if kind == "WasmPlugin" else ""
    return f"extensions.istio.io/trafficextension/{namespace}.{name}{suffix}"

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


def crd_schemas(path, wanted=lambda crd: True):
    """The served versions' schemas of the CustomResourceDefinitions in `path` that `wanted`
    keeps, by (apiVersion, kind)."""
    schemas = {}
    with open(path) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition" or not wanted(crd):
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def load_crd_schemas():
    return crd_schemas(os.path.join(SCHEMAS, "istio-crds.yaml"))


CRDS_BY_VERSION = os.path.join(ROOT, "deploy", "istio", "testdata", "istio-crds-by-version.yaml")
ISTIO_KINDS = ("WasmPlugin", "EnvoyFilter", "TrafficExtension")


@functools.cache
def load_crd_schemas_of(minor):
    """The schemas of the Istio kinds as Istio 1.<minor> itself defines them (its own
    crd-all.gen.yaml, deploy/istio/testdata/istio-crds-by-version.yaml)."""
    def of_this_version(crd):
        versions = crd["metadata"]["annotations"]["loopback-guard.invalid/istio-versions"].split()
        return f"1.{minor}" in versions

    return crd_schemas(CRDS_BY_VERSION, of_this_version)


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
    "(has(self.selector) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1":
        lambda v: _count(v, ("selector", "targetRefs")) <= 1,
    "has(self.wasm) != has(self.lua)": lambda v: ("wasm" in v) != ("lua" in v),
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


def check_consistency(docs, minor):
    plugins = only(docs, "WasmPlugin") + only(docs, "TrafficExtension")
    filters = only(docs, "EnvoyFilter")
    deployments = [(w, d) for w, d in only(docs, "Deployment") if d["metadata"]["name"] == "demo-app"]
    if len(plugins) != 1 or len(filters) != 1 or len(deployments) != 1:
        problem("deploy/istio", f"expected one WasmPlugin or TrafficExtension, one EnvoyFilter and the demo-app "
                f"Deployment, found {len(plugins)}, {len(filters)}, {len(deployments)}")
        return None
    (pw, plugin), (fw, envoy_filter), (dw, deployment) = plugins[0], filters[0], deployments[0]
    selectors = plugin["spec"]
    spec = plugin_fields(plugin)
    field = "spec.wasm" if plugin["kind"] == "TrafficExtension" else "spec"

    # The plugin: fail closed, the module's root id, only the module's own configuration fields.
    if selectors.get("phase") != "AUTHN":
        problem(pw, f"spec.phase is {selectors.get('phase')!r}, expected 'AUTHN'")
    expect = {"failStrategy": "FAIL_CLOSE", "pluginName": ROOT_ID}
    for key, want in expect.items():
        if spec.get(key) != want:
            problem(pw, f"{field}.{key} is {spec.get(key)!r}, expected {want!r}")
    if not spec.get("url", "").startswith("oci://"):
        problem(pw, f"{field}.url must be an oci:// URL")
    if not re.fullmatch(r"[0-9a-f]{64}", spec.get("sha256", "")):
        problem(pw, f"{field}.sha256 must be set (64 hex digits): without it the image is not verified")
    # The module's own configuration code says what it accepts (`loopback-guard config validate`).
    refused = validate_plugin_config(spec.get("pluginConfig", {}))
    if refused:
        problem(pw, f"{field}.pluginConfig: the module refuses it: {refused}")
    if dig(spec, "pluginConfig", "mode", default="enforce") != "enforce":
        problem(pw, f"{field}.pluginConfig.mode must be enforce in the shipped manifest")
    # The module sets filter state only when asked: an access log that reads it needs the ask.
    if "wasm.loopback_guard." in json.dumps(envoy_filter) and dig(spec, "pluginConfig", "filter_state") is not True:
        problem(pw, f"{field}.pluginConfig.filter_state must be true: the EnvoyFilter's access log reads "
                "wasm.loopback_guard.decision and .reason")
    env = {e["name"]: e for e in dig(spec, "vmConfig", "env", default=[])}
    if dig(env, "TRUST_DOMAIN", "valueFrom") != "HOST":
        problem(pw, f"{field}.vmConfig.env must pass TRUST_DOMAIN from the host (valueFrom: HOST)")

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
        # Istio's own default/ROOTCA configs (pkg/model/authentication.go): identical configs
        # share one subscription; any other would be a second one with a timeout of its own.
        if dig(sds, "sds_config", "initial_fetch_timeout") != "0s" or \
                dig(sds, "sds_config", "api_config_source", "set_node_on_first_message_only") is not True:
            problem(fw, f"SDS secret {name!r}: the config must be Istio's own (initial_fetch_timeout 0s, "
                    "set_node_on_first_message_only), to share its subscription")
    for key in ("disable_stateless_session_resumption", "disable_stateful_session_resumption"):
        if tls.get(key) is not True:
            problem(fw, f"{key} must be true: TLS session resumption stays off (defence in depth)")
    hcm = dig(listener, "filter_chains", 0, "filters", 0, "typed_config", default={})
    if hcm.get("use_remote_address") is not True:
        problem(fw, "use_remote_address must be true: the downstream address is the TCP peer, never X-Forwarded-For")
    if hcm.get("skip_xff_append") is not True:
        problem(fw, "skip_xff_append must be true: X-Forwarded-For leaves as the app sent it, as on Istio's outbound")
    filters_ = http_filters(listener)
    want_name = expected_ecds_name(minor, plugin["kind"], plugin["metadata"].get("namespace"),
                                   plugin["metadata"]["name"])
    first = filters_[0] if filters_ else {}
    if want_name is None:
        problem(pw, f"Istio 1.{minor} has no {plugin['kind']} (TrafficExtension is new in 1.30)")
    elif first.get("name") != want_name:
        problem(fw, f"the first HTTP filter must be {want_name!r} (how Istio 1.{minor}'s istiod serves this "
                f"{plugin['kind']}), found {first.get('name')!r}")
    discovery = first.get("config_discovery", {})
    if sorted(discovery.get("type_urls", [])) != sorted([WASM_TYPE, RBAC_TYPE]):
        problem(fw, "the plugin's config_discovery must accept the Wasm type and the RBAC type "
                "(istio-agent's deny-all stand-in when the module cannot be loaded)")
    if not is_deny_all(discovery.get("default_config")):
        problem(fw, "the plugin's config_discovery needs a deny-all RBAC default_config: without it a "
                "missing plugin either blocks start-up or disables the filter")
    if discovery.get("apply_default_config_without_warming") is not True:
        problem(fw, "apply_default_config_without_warming must be true: a plugin that never arrives must not "
                "keep the listener (and with it the pod) from becoming ready")
    if dig(discovery, "config_source", "initial_fetch_timeout") == "0s":
        problem(fw, "the plugin's initial_fetch_timeout must not be 0s: the default config already fails closed")
    names = [f.get("name") for f in filters_]
    if names[-3:] != ["envoy.filters.http.fault", "envoy.filters.http.cors", ROUTER]:
        problem(fw, f"the HTTP filters must end with fault, cors, router as Istio's own do, found {names[-3:]}")

    # Same namespace, and the selectors pick the demo pod.
    namespaces = {plugin["metadata"].get("namespace"), envoy_filter["metadata"].get("namespace"),
                  deployment["metadata"].get("namespace")}
    if len(namespaces) != 1:
        problem("deploy/istio", f"WasmPlugin, EnvoyFilter and Deployment must share a namespace, found {namespaces}")
    pod_labels = dig(deployment, "spec", "template", "metadata", "labels", default={})
    for where, selector in ((pw, dig(selectors, "selector", "matchLabels")),
                            (fw, dig(envoy_filter, "spec", "workloadSelector", "labels"))):
        if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
            problem(where, f"selector {selector} does not select the demo-app pod (labels {pod_labels})")

    # The WasmPlugin's match keeps Istio from inserting it into its own listeners: it must name
    # exactly the loopback listener's port, server side.
    match = selectors.get("match", [])
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
        if volume == "istio-certs":
            problem(dw, "the certificate volume must not be named istio-certs: the injector adds its own volume "
                    "of that name when global.mountMtlsCerts is true")
        if dig(volumes, volume, "emptyDir", "medium") != "Memory":
            problem(dw, f"volume {volume!r} must be an in-memory emptyDir (it holds the private key)")
        app_mounts = [m for c in dig(deployment, "spec", "template", "spec", "containers", default=[])
                      for m in c.get("volumeMounts", []) if m["name"] == volume]
        if not app_mounts or not all(m.get("readOnly") for m in app_mounts):
            problem(dw, f"the app container must mount {volume!r}, read-only")
    return listener, plugin


# ---------------------------------------------------------------------------------------------
# Envoy


def is_deny_all(config):
    """An HTTP RBAC config that denies every request: ALLOW with no policies, or DENY with a
    policy whose permissions and principals are `any`."""
    if not isinstance(config, dict) or config.get("@type") != RBAC_TYPE:
        return False
    rules = config.get("rules")
    if not isinstance(rules, dict) or config.get("matcher") or config.get("shadow_rules"):
        return False
    if rules.get("action", "ALLOW") == "ALLOW":
        return not rules.get("policies")
    if rules.get("action") != "DENY":
        return False
    return any(p.get("permissions") == [{"any": True}] and p.get("principals") == [{"any": True}]
               for p in rules.get("policies", {}).values())


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
    # Every image is ${VARIABLE:-official image}: users get the official one, the test its
    # stand-in (scripts/compose-images.sh). certs and render run in the Envoy image too.
    images = {}
    for name, service in services.items():
        image = str(dig(service, "image", default=""))
        found = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*):-([^}]+)\}", image)
        if not found:
            problem(where, f"services.{name}.image is {image!r}, expected ${{VARIABLE:-official image}}")
            continue
        images[name] = found.groups()
    if images.get("envoy", (None, None))[1] != want_image:
        problem(where, f"services.envoy.image is {dig(services, 'envoy', 'image')!r}, default expected {want_image!r} "
                "(the Envoy version the tests run, scripts/lib.sh)")
    for name in ("certs", "render"):
        if name in images and images[name] != images.get("envoy"):
            problem(where, f"services.{name}.image must be the envoy service's image, {dig(services, 'envoy', 'image')!r} "
                    "(it has sh, awk and openssl: nothing to install at up)")
    # Nothing installed when the stack starts: that needs the network on every `up`.
    for name, service in services.items():
        run = " ".join(str(part) for key in ("entrypoint", "command")
                       for part in (service.get(key) if isinstance(service.get(key), list) else [service.get(key) or ""]))
        if re.search(r"\b(apk add|apt-get|apt install|pip install|dnf install|yum install)\b", run):
            problem(where, f"services.{name} installs packages when it starts ({run!r}): put them in its image")
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
        ok_(f"{where}: replaceable official images, Envoy's of the tested version (certs and render in it, "
           "nothing installed at start), the shared template fully rendered, the app in Envoy's network namespace")
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


def check_all(docs, envoy=None, wasm=None, consistency=True, quiet=False, minor=FAMILY_A, label=""):
    """Runs every check on parsed manifests (for Istio 1.<minor>); returns the problems found."""
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
    found = check_consistency(docs, minor)
    if len(problems) == before:
        say(f"ok: {label or 'the manifests'} agree with each other for Istio 1.{minor} (ECDS name, selectors, "
            "ports, certificates, fail-closed, never blocking start-up)")
    if envoy and found:
        listener, plugin = found
        envoy_validate(envoy, listener, f"{label or 'EnvoyFilter'} listener as written, plugin over ECDS", say)
        if wasm:
            if not os.path.isfile(wasm):
                problem("--wasm", f"{wasm}: no such file (run make build)")
            else:
                envoy_validate(envoy, inline_plugin(minor, listener, plugin, wasm),
                               f"{label or 'plugin'} inlined as istio-agent delivers it, with the built module", say)
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


def rename_volume(deployment, new):
    """Renames the certificate volume everywhere the pod names it."""
    text = json.dumps(deployment)
    old = dig(deployment, "spec", "template", "spec", "volumes", 0, "name")
    renamed = json.loads(text.replace(f'\\"name\\": \\"{old}\\"', f'\\"name\\": \\"{new}\\"')
                         .replace(f'"name": "{old}"', f'"name": "{new}"'))
    deployment.clear()
    deployment.update(renamed)
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
     "the module refuses it: loopback-guard: invalid configuration: principle: unknown field", None),
    ("access log reads filter state nobody asked for", "WasmPlugin",
     _set(["spec", "pluginConfig", "filter_state"], _DELETE), "pluginConfig.filter_state must be true", None),
    ("plugin attached to Istio's own listeners", "WasmPlugin", _set(["spec", "match"], _DELETE),
     "spec.match must be mode SERVER", None),
    ("selector misses the pod", "WasmPlugin", _set(["spec", "selector", "matchLabels", "app"], "other"),
     "does not select the demo-app pod", None),
    ("unknown EnvoyFilter field", "EnvoyFilter", _set(["spec", "workloadSelectorr"], {}), "was unexpected", None),
    ("wrong ECDS name", "EnvoyFilter", _set(_HCM + ["http_filters", 0, "name"], "loopback-guard"),
     "the first HTTP filter must be", None),
    ("plugin without a default config", "EnvoyFilter",
     _set(_HCM + ["http_filters", 0, "config_discovery", "default_config"], _DELETE),
     "deny-all RBAC default_config", None),
    ("default config that allows", "EnvoyFilter",
     _set(_HCM + ["http_filters", 0, "config_discovery", "default_config", "rules", "action"], "ALLOW"),
     "deny-all RBAC default_config", None),
    ("listener warming on the plugin", "EnvoyFilter",
     _set(_HCM + ["http_filters", 0, "config_discovery", "apply_default_config_without_warming"], False),
     "apply_default_config_without_warming must be true", None),
    ("plugin fetch that blocks start-up", "EnvoyFilter",
     _set(_HCM + ["http_filters", 0, "config_discovery", "config_source", "initial_fetch_timeout"], "0s"),
     "initial_fetch_timeout must not be 0s", None),
    ("downstream address from X-Forwarded-For", "EnvoyFilter", _set(_HCM + ["use_remote_address"], False),
     "use_remote_address must be true", None),
    ("X-Forwarded-For appended", "EnvoyFilter", _set(_HCM + ["skip_xff_append"], _DELETE),
     "skip_xff_append must be true", None),
    ("TLS session resumption on", "EnvoyFilter", _set(_TLS + ["disable_stateless_session_resumption"], False),
     "resumption stays off", None),
    ("an SDS config of its own", "EnvoyFilter",
     _set(_TLS + ["common_tls_context", "tls_certificate_sds_secret_configs", 0, "sds_config",
                  "initial_fetch_timeout"], "5s"), "to share its subscription", None),
    ("no fault filter", "EnvoyFilter", lambda d: dig(d, *_HCM, "http_filters").pop(-3),
     "must end with fault, cors, router", None),
    ("TrafficExtension fail-open", "TrafficExtension", _set(["spec", "wasm", "failStrategy"], "FAIL_OPEN"),
     "spec.wasm.failStrategy is 'FAIL_OPEN'", None),
    ("unknown TrafficExtension field", "TrafficExtension", _set(["spec", "wasm", "pluginNam"], "x"),
     "'pluginNam' was unexpected", None),
    ("TrafficExtension with Lua too (CEL)", "TrafficExtension",
     _set(["spec", "lua"], {"inlineCode": "x"}), "exactly one of wasm or lua must be set", None),
    ("TrafficExtension attached to Istio's own listeners", "TrafficExtension", _set(["spec", "match"], _DELETE),
     "spec.match must be mode SERVER", None),
    ("certificate volume named istio-certs", "Deployment",
     lambda d: rename_volume(d, "istio-certs"), "must not be named istio-certs", None),
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
    ("another Envoy version", _set(["services", "envoy", "image"], "${ENVOY_IMAGE:-envoyproxy/envoy:v1.39.0}"),
     "the Envoy version the tests run"),
    ("an image that cannot be replaced", _set(["services", "backend", "image"], "hashicorp/http-echo:1.0.0"),
     "expected ${VARIABLE:-official image}"),
    ("certificates made in another image", _set(["services", "certs", "image"], "${CERTS_IMAGE:-alpine:3.20}"),
     "must be the envoy service's image"),
    ("a package installed at start",
     _set(["services", "certs", "entrypoint"], ["/bin/sh", "-c", "apk add --no-cache openssl && sh /demo/gen-certs.sh /certs"]),
     "installs packages when it starts"),
    ("a template placeholder left unset", _set(["services", "render", "environment", "PLUGIN_CONFIG"], _DELETE),
     "does not set ['PLUGIN_CONFIG']"),
    ("XFCC forwarded from the client",
     _set(["services", "render", "environment", "FORWARD_CLIENT_CERT"], "ALWAYS_FORWARD_ONLY"),
     "expected 'SANITIZE_SET'"),
    ("a second copy of the Envoy config",
     _set(["services", "render", "volumes", 0], "./envoy.yaml:/template/loopback-guard.yaml:ro"),
     "no second copy of the Envoy config"),
]


def self_test(docs, envoy, wasm, minor=FAMILY_A):
    """Each row breaks one thing in the shipped manifests; the checks must notice, naming it.
    Rows for the WasmPlugin run on the 1.26-1.29 family, rows for the TrafficExtension on the
    1.30+ one, the rest on both; the compose rows once."""
    failures = 0
    kinds = {d.get("kind") for _, d in docs}
    for name, kind, mutate, expect, needs in SELF_TESTS:
        if kind not in kinds:
            continue
        if (needs and not envoy) or (needs == "wasm" and not wasm):
            print(f"skip: self-test {name!r} (needs --envoy{' and --wasm' if needs == 'wasm' else ''})")
            continue
        mutated = copy.deepcopy(docs)
        targets = [d for _, d in mutated if d.get("kind") == kind and
                   (kind != "Deployment" or d["metadata"]["name"] == "demo-app")]
        mutate(targets[0])
        found = check_all(mutated, envoy=envoy if needs else None, wasm=wasm if needs == "wasm" else None,
                          quiet=True, minor=minor)
        if any(expect in p for p in found):
            ok(f"self-test {name!r} caught (Istio 1.{minor})")
        else:
            failures += 1
            print(f"FAIL: self-test {name!r} (Istio 1.{minor}): no problem mentioning {expect!r}; got {found}",
                  file=sys.stderr)
    compose = os.path.join(ROOT, "deploy", "compose", "compose.yaml")
    if os.path.exists(compose) and minor == FAMILY_A:
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


def family_docs():
    """(label, Istio minor version, parsed docs) for the two checked-in families."""
    base = os.path.join(ROOT, "deploy", "istio")
    shared = [os.path.join(base, n) for n in ("demo-app.yaml", "backend.yaml")]
    return [
        ("deploy/istio (Istio 1.26-1.29, WasmPlugin)", FAMILY_A,
         load_manifests(sorted(glob.glob(os.path.join(base, "*.yaml"))))),
        ("deploy/istio/istio-1.30-and-later (TrafficExtension)", FAMILY_B,
         load_manifests(sorted(glob.glob(os.path.join(FAMILY_B_DIR, "*.yaml"))) + shared)),
    ]


def renderer():
    import importlib.util
    spec = importlib.util.spec_from_file_location("istio_manifests", os.path.join(ROOT, "scripts", "istio-manifests.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_renderings():
    """The checked-in families are renderings of the sources, and a fresh rendering for every
    supported Istio version (and the translated WasmPlugin on 1.30+) passes checks 1 and 2."""
    render = renderer()
    found = []
    for minor, directory in ((FAMILY_A, os.path.join(ROOT, "deploy", "istio")), (FAMILY_B, FAMILY_B_DIR)):
        diff = render.check(render.render(f"1.{minor}"), directory)
        if diff:
            found += [f"{rel(directory)}: {d} (run make istio-manifests ISTIO_VERSION=1.{minor} and copy it, then commit)" for d in diff]
        else:
            ok(f"{rel(directory)} is the rendering for Istio 1.{minor}")
    variants = [(m, None) for m in ISTIO_VERSIONS] + [(m, "wasmplugin") for m in ISTIO_VERSIONS if m >= 30]
    for version in REFUSED_VERSIONS:
        try:
            render.render(version)
            found.append(f"the renderer accepted Istio {version}, which this validator does not know: "
                         "add a new version to both (docs/istio.md, Adding a newer Istio)")
        except render.RenderError as err:
            ok(f"the renderer refuses Istio {version}: {str(err)[:70]}...")
    for minor, resource in variants:
        label = f"rendered for Istio 1.{minor}{' (WasmPlugin, translated name)' if resource else ''}"
        files = render.render(f"1.{minor}", resource)
        docs = [(f"{label}: {name}#{i}", doc) for name, text in sorted(files.items())
                for i, doc in enumerate(yaml.safe_load_all(text)) if doc is not None]
        got = check_all(docs, minor=minor, quiet=True)
        if got:
            found += got
        else:
            ok(f"{label}: {', '.join(sorted(files))} valid and consistent")
        # The same rendering against that version's own CRDs: a field or a kind 1.<minor>
        # does not know (a TrafficExtension before 1.30, an enum value added later) is refused.
        own = load_crd_schemas_of(minor)
        before = len(problems)
        istio_docs = [(w, d) for w, d in docs if d.get("kind") in ISTIO_KINDS]
        for where, doc in istio_docs:
            if (doc.get("apiVersion"), doc.get("kind")) not in own:
                problem(where, f"Istio 1.{minor} defines no {doc.get('kind')} {doc.get('apiVersion')}")
            else:
                validate_manifest(f"{where} (Istio 1.{minor}'s CRD)", doc, own)
        if len(problems) == before:
            ok(f"{label}: {', '.join(sorted(d['kind'] for _, d in istio_docs))} valid against Istio 1.{minor}'s own CRDs")
        else:
            found += problems[before:]
            del problems[before:]
    # Per-version CRDs can fail: 1.29 defines no TrafficExtension.
    extension = [(n, d) for n, t in (("extension 1.31", render.render(f"1.{FAMILY_B}")["trafficextension.yaml"]),)
                 for d in yaml.safe_load_all(t) if d]
    if (extension[0][1]["apiVersion"], "TrafficExtension") in load_crd_schemas_of(FAMILY_A):
        found.append("Istio 1.29's own CRDs define a TrafficExtension (new in 1.30): wrong CRD file")
    else:
        ok("Istio 1.29's own CRDs have no TrafficExtension: a 1.31 rendering would be refused there")
    # And a field value: failStrategy FAIL_RELOAD is new in 1.27's WasmPlugin CRD.
    reload_plugin = yaml.safe_load(render.render(f"1.{FAMILY_A}")["wasmplugin.yaml"])
    reload_plugin["spec"]["failStrategy"] = "FAIL_RELOAD"
    verdicts = []
    for minor in (26, 27):
        before = len(problems)
        validate_manifest("FAIL_RELOAD", reload_plugin, load_crd_schemas_of(minor))
        verdicts.append(len(problems) > before)
        del problems[before:]
    if verdicts == [True, False]:
        ok("failStrategy FAIL_RELOAD: refused by Istio 1.26's WasmPlugin CRD, accepted by 1.27's")
    else:
        found.append(f"failStrategy FAIL_RELOAD against 1.26/1.27's CRDs: refused {verdicts}, expected [True, False]")
    # The defect this guards against: a listener rendered for 1.26-1.29 asks 1.30+ for a name
    # its istiod never serves.
    old = render.render(f"1.{FAMILY_A}")
    new = render.render(f"1.{FAMILY_B}")
    mixed = [(n, d) for n, t in (("listener 1.29", old["envoyfilter-loopback-listener.yaml"]),
                                 ("extension 1.31", new["trafficextension.yaml"]),
                                 ("demo-app", new["demo-app.yaml"])) for d in yaml.safe_load_all(t) if d]
    if any("how Istio 1.31's istiod serves" in p for p in check_all(mixed, minor=FAMILY_B, quiet=True)):
        ok("a listener rendered for 1.29 is refused for 1.31 (it names what 1.31's istiod never serves)")
    else:
        found.append("a 1.29 listener with a 1.31 TrafficExtension was not refused")
    problems.clear()
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", help="Envoy binary for --mode validate")
    parser.add_argument("--wasm", help="the built module, to validate the inlined filter with it")
    parser.add_argument("--no-consistency", action="store_true",
                        help="only schema checks (for extra files such as a rendered WasmPlugin)")
    parser.add_argument("--self-test", action="store_true",
                        help="also break the manifests one way at a time and expect each to be caught")
    parser.add_argument("--istio-version", default=f"1.{FAMILY_A}",
                        help="with FILEs: the Istio version they are for (default 1.29)")
    parser.add_argument("files", nargs="*", help="manifests to check (default: both families, every rendering)")
    args = parser.parse_args()

    found = []
    if args.files:
        minor = int(args.istio_version.split(".")[1])
        families = [("the files given", minor, load_manifests(args.files))]
    else:
        families = family_docs()
    for label, minor, docs in families:
        found += check_all(docs, envoy=args.envoy, wasm=args.wasm, consistency=not args.no_consistency,
                           minor=minor, label=label)
    if not args.files:
        found += check_renderings()
        check_dockerfile(os.path.join(ROOT, "Dockerfile"))
        found += list(problems)
        problems.clear()
    compose = os.path.join(ROOT, "deploy", "compose", "compose.yaml")
    if not args.files and os.path.exists(compose):
        validate_compose(compose)
        found += list(problems)

    if found:
        print(f"\n{len(found)} problem(s):", file=sys.stderr)
        for p in found:
            print(f"  {p}", file=sys.stderr)
        print(f"validate-manifests: {passed[0]} passed, {len(found)} failed")
        return 1
    failed = 0
    if args.self_test:
        for label, minor, docs in families:
            failed += self_test(docs, args.envoy, args.wasm, minor)
    print(f"validate-manifests: {passed[0]} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
