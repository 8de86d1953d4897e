"""What istiod and istio-agent do with this project's Istio manifests, in one place, for the
scripts that need it: scripts/validate-manifests.py (the manifests' checks), scripts/
istio-manifests.py (the renderer's caller) and the xDS test control plane
(integration/xds/control_plane.py). Standard library only: each imports it from scripts/.

The renderer itself is `loopback-guard istio render` (cli/src/istio.rs). validate-manifests.py
keeps a deliberately independent copy of the ECDS name rule (`expected_ecds_name`) to check the
renderer's output; every other rule lives here.

Read in istio/istio at 1.26.0 ... 1.29.6, 1.30.0 ... 1.31.0-rc.0 and master 86c9f01:
- the ECDS name istiod serves a plugin resource under: 1.26-1.29 serve WasmPlugins as
  WasmPluginResourceNamePrefix + "<ns>.<name>" (pilot/pkg/model/extensions.go); 1.30+ serve
  only TrafficExtensions, TrafficExtensionResourceNamePrefix + "<ns>.<name>" (extensions.go,
  convertToTrafficExtensionWrapper; BuildExtensionConfiguration in pilot/pkg/networking/core/
  extension_config_builder.go), a WasmPlugin being the TrafficExtension
  "<name>~istio-translated-wasmplugin" (syntheticMarker, pilot/pkg/config/kube/extensions/translate.go);
- the Wasm PluginConfig's own name: "<ns>.<name>" of that resource (extensions.go, buildWasmConfig);
- the agent's hints in the VM's environment (pkg/model/wasm.go, the same at every tag 1.26.0 ...
  master): ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION (always set, the resource's resourceVersion),
  ISTIO_META_WASM_IMAGE_PULL_POLICY (when a policy is set), ISTIO_META_WASM_IMAGE_PULL_SECRET (when
  a pull secret is set); istio-agent reads and strips them, and replaces the remote module by the
  file it fetched (pkg/wasm/convert.go, rewriteVMConfig).
"""
import copy
import functools
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
WASM_PLUGIN_PREFIX = "extensions.istio.io/wasmplugin/"
TRAFFIC_EXTENSION_PREFIX = "extensions.istio.io/trafficextension/"
TRANSLATED_MARKER = "~istio-translated-wasmplugin"
RESOURCE_VERSION_ENV = "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION"
PULL_POLICY_ENV = "ISTIO_META_WASM_IMAGE_PULL_POLICY"
PULL_SECRET_ENV = "ISTIO_META_WASM_IMAGE_PULL_SECRET"
# The plugin's failStrategy as Envoy's failure_policy (extensions.go, toEnvoyFailurePolicy).
FAILURE_POLICY = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}


def minor_of(version):
    """The minor of an Istio version: "1.31.0-rc.0" -> 31."""
    return int(str(version).split(".")[1])


def dig(obj, *keys, default=None):
    """obj[k1][k2]..., or `default` where a key or index is missing."""
    for key in keys:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


def istiod_resource_name(minor, kind, name):
    """The name of the resource istiod of Istio 1.<minor> serves for a `kind` called `name`
    (None: that version serves no such kind)."""
    if minor < 30:
        return name if kind == "WasmPlugin" else None
    return name + TRANSLATED_MARKER if kind == "WasmPlugin" else name


def istiod_ecds_name(minor, kind, namespace, name):
    """The ECDS name Istio 1.<minor>'s istiod serves a plugin resource under (None: none)."""
    served = istiod_resource_name(minor, kind, name)
    if served is None:
        return None
    prefix = WASM_PLUGIN_PREFIX if minor < 30 else TRAFFIC_EXTENSION_PREFIX
    return f"{prefix}{namespace}.{served}"


def plugin_fields(plugin):
    """The module's fields: a WasmPlugin's spec, a TrafficExtension's spec.wasm."""
    spec = plugin.get("spec", {})
    return spec.get("wasm", {}) if plugin.get("kind") == "TrafficExtension" else spec


def loopback_listener(envoy_filter):
    """The listener the EnvoyFilter ADDs (None unless there is exactly one)."""
    adds = [p for p in dig(envoy_filter, "spec", "configPatches", default=[])
            if p.get("applyTo") == "LISTENER" and dig(p, "patch", "operation") == "ADD"]
    return adds[0]["patch"]["value"] if len(adds) == 1 else None


def http_filters(listener):
    """The HTTP filters of the listener's first filter chain's connection manager."""
    return dig(listener, "filter_chains", 0, "filters", 0, "typed_config", "http_filters", default=[])


def wasm_config(minor, plugin, plugin_config=None):
    """The Wasm HTTP filter's config (Envoy JSON) as istiod of Istio 1.<minor> builds it for
    `plugin` (extensions.go, buildWasmConfig): the module still remote, the agent's hints in
    ISTIO_META_* variables. `plugin_config` stands in for the plugin's pluginConfig if given."""
    fields = plugin_fields(plugin)
    meta = plugin["metadata"]
    env = dig(fields, "vmConfig", "env", default=[])
    key_values = {RESOURCE_VERSION_ENV: str(meta.get("resourceVersion", "1"))}
    if fields.get("imagePullPolicy"):
        key_values[PULL_POLICY_ENV] = fields["imagePullPolicy"]
    if fields.get("imagePullSecret"):
        # istiod puts the Secret's dockerconfigjson itself here; none in the tests.
        key_values[PULL_SECRET_ENV] = "{}"
    key_values.update({e["name"]: e.get("value", "") for e in env if e.get("valueFrom", "INLINE") == "INLINE"})
    config = fields.get("pluginConfig", {}) if plugin_config is None else plugin_config
    served = istiod_resource_name(minor, plugin["kind"], meta["name"]) or meta["name"]
    return {
        "config": {
            "name": f"{meta['namespace']}.{served}",
            "root_id": fields["pluginName"],
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(config, separators=(",", ":"))},
            "vm_config": {
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"remote": {"http_uri": {"uri": fields["url"], "timeout": "30s", "cluster": "_"},
                                    "sha256": fields.get("sha256", "")}},
                "environment_variables": {
                    "key_values": key_values,
                    "host_env_keys": [e["name"] for e in env if e.get("valueFrom") == "HOST"],
                },
            },
            "failure_policy": FAILURE_POLICY[fields.get("failStrategy", "FAIL_CLOSE")],
        }
    }


def agent_rewrite(wasm, module):
    """What istio-agent hands Envoy for istiod's Wasm config `wasm` once it fetched the module to
    the file `module` (convert.go, rewriteVMConfig): the code local, ISTIO_META_* stripped."""
    wasm = copy.deepcopy(wasm)
    vm = wasm["config"]["vm_config"]
    envs = vm.setdefault("environment_variables", {})
    envs["key_values"] = {k: v for k, v in envs.get("key_values", {}).items() if not k.startswith("ISTIO_META_")}
    vm["code"] = {"local": {"filename": os.path.abspath(module)}}
    return wasm


def inline_plugin(minor, listener, plugin, module):
    """The listener with the plugin inlined as Envoy ends up with it over ECDS from istio-agent."""
    listener = copy.deepcopy(listener)
    filters = http_filters(listener)
    wasm = agent_rewrite(wasm_config(minor, plugin), module)
    filters[0] = {"name": filters[0]["name"], "typed_config": {"@type": WASM_TYPE, **wasm}}
    return listener


@functools.lru_cache(maxsize=1)
def cli():
    """The `loopback-guard` command: $LOOPBACK_GUARD_CLI, else the workspace's debug build (built
    here if needed)."""
    given = os.environ.get("LOOPBACK_GUARD_CLI")
    if given:
        return given
    subprocess.run(["cargo", "build", "--locked", "--quiet", "-p", "loopback-guard-cli"], cwd=ROOT, check=True,
                   stdout=sys.stderr)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "debug", "loopback-guard")


def validate_plugin_config(plugin_config):
    """What the module makes of a pluginConfig, by the command (`config validate --output json`,
    the module's own configuration code): None if valid, else the line the filter logs."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(plugin_config, f)
        f.flush()
        done = subprocess.run([cli(), "config", "validate", f.name, "--output", "json"], capture_output=True)
    try:
        report = json.loads(done.stdout)
        result = report["configurations"][0]
    except (ValueError, KeyError, IndexError):
        return f"loopback-guard config validate failed (exit {done.returncode}): {done.stderr.decode().strip()}"
    return None if result.get("valid") else result.get("error", "invalid")
