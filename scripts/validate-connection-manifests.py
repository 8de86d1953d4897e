#!/usr/bin/env python3
"""Checks deploy/istio/connection/ (connection scope: the module as a NETWORK filter) offline:

  validate-connection-manifests.py [--envoy ENVOY --wasm MODULE]

1. Every manifest against Istio's CRD schemas, strictly (validate-manifests.py's check 1).
2. The manifests against each other, for both families (Istio 1.26-1.29: WasmPlugins;
   1.30+: TrafficExtensions): each listener's first network filter asks for its plugin by the
   ECDS name istiod serves a NETWORK plugin under (1.29.6 extension/wasmplugin.go and 1.30.3
   extension/extensionfilter.go: the prefix + <namespace>.<name>, types network Wasm and network
   RBAC), with a deny-all network RBAC default applied without warming; each plugin is
   `type: NETWORK`, `scope: connection`, fail-closed, matched to its listener's port; the HTTP
   listener's plugin says `on_deny: rbac` and its HTTP chain starts with an RBAC that admits only
   the filter state `wasm.loopback_guard.decision` = allow (or would_deny); the TCP listener's
   plugin closes (no on_deny) and its tcp_proxy waits for the guard's first bytes.
3. --self-test: each of SELF_TESTS breaks the manifests one way, in memory, and must be reported.
4. With --envoy: each listener inside the sidecar-shaped bootstrap in `envoy --mode validate`, as
   written (over ECDS) and with the plugin inlined as a network Wasm filter loading the built
   module with its pluginConfig (so the module's configure step must accept it).
"""

import argparse
import copy
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("validate_manifests", os.path.join(HERE, "validate-manifests.py"))
vm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vm)

DIR = os.path.join(vm.ROOT, "deploy", "istio", "connection")
FAMILIES = {
    "1.26-1.29": ([os.path.join(DIR, "wasmplugin.yaml"), os.path.join(DIR, "envoyfilter-loopback-listeners.yaml")],
                  "WasmPlugin", "extensions.istio.io/wasmplugin/"),
    "1.30+": ([os.path.join(DIR, "istio-1.30-and-later", "trafficextension.yaml"),
               os.path.join(DIR, "istio-1.30-and-later", "envoyfilter-loopback-listeners.yaml")],
              "TrafficExtension", "extensions.istio.io/trafficextension/"),
}
NET_WASM = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HCM = "envoy.filters.network.http_connection_manager"
VERDICT_KEY = "wasm.loopback_guard.decision"


def deny_all_network(config):
    if not isinstance(config, dict):
        return False
    rules = config.get("rules", {})
    return (config.get("@type") == NET_RBAC and rules.get("action") == "DENY"
            and any(p.get("permissions") == [{"any": True}] and p.get("principals") == [{"any": True}]
                    for p in rules.get("policies", {}).values()))


def check_family(name, paths, kind, prefix, docs=None):
    where = f"deploy/istio/connection ({name})"
    docs = vm.load_manifests(paths) if docs is None else docs
    vm.check_all(docs, consistency=False, quiet=True)
    found = list(vm.problems)
    plugins = {d["metadata"]["name"]: d for _, d in vm.only(docs, kind)}
    filters = vm.only(docs, "EnvoyFilter")
    if len(filters) != 1 or len(plugins) != 2:
        return found + [f"{where}: expected one EnvoyFilter and two {kind}s"], []
    listeners = [p["patch"]["value"] for p in filters[0][1]["spec"]["configPatches"]
                 if p.get("applyTo") == "LISTENER" and vm.dig(p, "patch", "operation") == "ADD"]
    checked = []
    for listener in listeners:
        lw = f"{where}: listener {listener.get('name')}"
        chain = vm.dig(listener, "filter_chains", 0, default={})
        filters_ = chain.get("filters", [])
        guard = filters_[0] if filters_ else {}
        discovery = guard.get("config_discovery", {})
        plugin = next((p for n, p in plugins.items() if guard.get("name") == f"{prefix}{p['metadata']['namespace']}.{n}"), None)
        if plugin is None:
            found.append(f"{lw}: its first network filter {guard.get('name')!r} names no {kind} as istiod serves it ({prefix}<ns>.<name>)")
            continue
        if discovery.get("type_urls") != [NET_WASM, NET_RBAC]:
            found.append(f"{lw}: type_urls must be the network Wasm and network RBAC types, as istiod's own")
        if not deny_all_network(discovery.get("default_config")) or not discovery.get("apply_default_config_without_warming"):
            found.append(f"{lw}: no deny-all network RBAC default applied without warming")
        fields = vm.plugin_fields(plugin)
        config = fields.get("pluginConfig", {})
        port = vm.dig(listener, "address", "socket_address", "port_value")
        if fields.get("type") != "NETWORK" or config.get("scope") != "connection":
            found.append(f"{lw}: {plugin['metadata']['name']} must be type NETWORK with scope connection")
        if fields.get("failStrategy", "FAIL_CLOSE") != "FAIL_CLOSE":
            found.append(f"{lw}: {plugin['metadata']['name']} must fail closed")
        if vm.dig(plugin, "spec", "match", 0, "ports", 0, "number") != port:
            found.append(f"{lw}: {plugin['metadata']['name']} matches another port than {port}")
        if not vm.dig(chain, "transport_socket", "typed_config", "require_client_certificate"):
            found.append(f"{lw}: must require a client certificate")
        nxt = filters_[1] if len(filters_) > 1 else {}
        if nxt.get("name") == HCM:
            first = vm.dig(nxt, "typed_config", "http_filters", 0, default={})
            policies = vm.dig(first, "typed_config", "rules", "policies", default={})
            verdicts = sorted(p.get("filter_state", {}).get("string_match", {}).get("exact")
                              for policy in policies.values() for p in policy.get("principals", [])
                              if p.get("filter_state", {}).get("key") == VERDICT_KEY)
            if vm.dig(first, "typed_config", "@type") != HTTP_RBAC or verdicts != ["allow", "would_deny"]:
                found.append(f"{lw}: the HTTP chain must start with RBAC admitting only {VERDICT_KEY} allow/would_deny")
            if config.get("on_deny") != "rbac":
                found.append(f"{lw}: on an HTTP listener the plugin must say on_deny: rbac (RBAC answers 403)")
        elif vm.dig(nxt, "typed_config", "@type") == TCP_PROXY:
            if "on_deny" in config:
                found.append(f"{lw}: on a TCP listener a denied connection must be closed (no on_deny)")
            if vm.dig(nxt, "typed_config", "upstream_connect_mode") != "ON_DOWNSTREAM_DATA":
                found.append(f"{lw}: tcp_proxy must dial only after the guard let bytes through (ON_DOWNSTREAM_DATA)")
        else:
            found.append(f"{lw}: the guard must be followed by the connection manager or tcp_proxy")
        checked.append((listener, plugin))
    return found, checked


def _listeners(docs):
    return [p["patch"]["value"] for _, d in vm.only(docs, "EnvoyFilter") for p in d["spec"]["configPatches"]]


def _plugin(docs, name):
    return next(vm.plugin_fields(d) for _, d in docs if d.get("metadata", {}).get("name") == name and d["kind"] != "EnvoyFilter")


def _set(obj, value, *keys):
    for key in keys[:-1]:
        obj = obj[key]
    obj[keys[-1]] = value


# Each break, and what must be reported about it.
SELF_TESTS = [
    ("the HTTP listener asks for the request-scope plugin's name",
     lambda docs: _set(_listeners(docs)[0]["filter_chains"][0]["filters"][0], _listeners(docs)[0]["filter_chains"][0]["filters"][0]["name"].replace("-connection", ""), "name"),
     "names no"),
    ("the HTTP chain's RBAC is gone",
     lambda docs: _listeners(docs)[0]["filter_chains"][0]["filters"][1]["typed_config"]["http_filters"].pop(0),
     "must start with RBAC"),
    ("RBAC admits any verdict",
     lambda docs: _set(_listeners(docs)[0]["filter_chains"][0]["filters"][1]["typed_config"]["http_filters"][0]["typed_config"]["rules"]["policies"]["loopback-guard"], [{"any": True}], "principals"),
     "must start with RBAC"),
    ("the HTTP listener's plugin closes instead of leaving the 403 to RBAC",
     lambda docs: _plugin(docs, "loopback-guard-connection")["pluginConfig"].pop("on_deny"),
     "on_deny: rbac"),
    ("the TCP listener's plugin leaves denials to an RBAC that is not there",
     lambda docs: _set(_plugin(docs, "loopback-guard-tcp")["pluginConfig"], "rbac", "on_deny"),
     "must be closed"),
    ("a plugin of request scope",
     lambda docs: _plugin(docs, "loopback-guard-tcp")["pluginConfig"].pop("scope"),
     "scope connection"),
    ("a plugin of type HTTP",
     lambda docs: _set(_plugin(docs, "loopback-guard-tcp"), "HTTP", "type"),
     "type NETWORK"),
    ("a plugin that fails open",
     lambda docs: _set(_plugin(docs, "loopback-guard-connection"), "FAIL_OPEN", "failStrategy"),
     "fail closed"),
    ("tcp_proxy dials at accept",
     lambda docs: _listeners(docs)[1]["filter_chains"][0]["filters"][1]["typed_config"].pop("upstream_connect_mode"),
     "ON_DOWNSTREAM_DATA"),
    ("no deny-all default for the guard",
     lambda docs: _listeners(docs)[1]["filter_chains"][0]["filters"][0]["config_discovery"].pop("default_config"),
     "deny-all"),
    ("the listener asks for the plugin with the HTTP filter's types",
     lambda docs: _set(_listeners(docs)[1]["filter_chains"][0]["filters"][0]["config_discovery"], ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"], "type_urls"),
     "type_urls"),
    ("a listener that does not require a client certificate",
     lambda docs: _set(_listeners(docs)[1]["filter_chains"][0]["transport_socket"]["typed_config"], False, "require_client_certificate"),
     "client certificate"),
]


def self_test():
    failed = []
    for name, (paths, kind, prefix) in FAMILIES.items():
        for label, brk, expect in SELF_TESTS:
            docs = copy.deepcopy(vm.load_manifests(paths))
            brk(docs)
            found, _ = check_family(name, paths, kind, prefix, docs)
            if any(expect in text for text in found):
                print(f"ok: self-test ({name}): {label}: reported")
            else:
                failed.append(f"self-test ({name}): {label}: not reported as {expect!r} (found {found})")
    return failed


def inline(listener, plugin, wasm):
    listener = copy.deepcopy(listener)
    fields = vm.plugin_fields(plugin)
    env = fields.get("vmConfig", {}).get("env", [])
    guard = listener["filter_chains"][0]["filters"][0]
    listener["filter_chains"][0]["filters"][0] = {"name": guard["name"], "typed_config": {"@type": NET_WASM, "config": {
        "name": f"{plugin['metadata']['namespace']}.{plugin['metadata']['name']}",
        "root_id": fields["pluginName"],
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(fields.get("pluginConfig", {}), separators=(",", ":"))},
        "fail_open": False,
        "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": os.path.abspath(wasm)}},
                      "environment_variables": {"host_env_keys": [e["name"] for e in env if e.get("valueFrom") == "HOST"]}},
    }}}
    return listener


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy")
    parser.add_argument("--wasm")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    failed = self_test() if args.self_test else []
    for name, (paths, kind, prefix) in FAMILIES.items():
        found, checked = check_family(name, paths, kind, prefix)
        failed += found
        if not found:
            print(f"ok: deploy/istio/connection ({name}): {len(checked)} listeners and their plugins agree")
        if args.envoy and not found:
            for listener, plugin in checked:
                vm.problems.clear()
                vm.envoy_validate(args.envoy, listener, f"{name} {listener['name']} over ECDS")
                if args.wasm:
                    vm.envoy_validate(args.envoy, inline(listener, plugin, args.wasm), f"{name} {listener['name']} inlined")
                failed += vm.problems
    for text in failed:
        print(f"FAIL: {text}")
    print(f"validate-connection-manifests: {len(failed)} problem(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
