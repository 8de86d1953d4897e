#!/usr/bin/env python3
"""Renders the Istio manifests for one Istio version, from one source of truth.

  istio-manifests.py --istio-version 1.31 [--resource wasmplugin|trafficextension]
                     [--url oci://REGISTRY:TAG --sha256 HEX] [--out DIR | --check DIR]
  istio-manifests.py --ecds-name --istio-version V [--resource R]   (prints the ECDS name only)

Sources (deploy/istio/): wasmplugin.yaml (the plugin: module, digest, configuration, fail
strategy, match) and envoyfilter-loopback-listener.yaml (the loopback listener), plus
demo-app.yaml and backend.yaml, copied as they are. What depends on the version:

  Istio 1.26-1.29  istiod serves a WasmPlugin over ECDS as
                   extensions.istio.io/wasmplugin/<namespace>.<name>
                   (pilot/pkg/model/extensions.go, WasmPluginResourceNamePrefix)
  Istio 1.30+      istiod serves only extensions.istio.io/trafficextension/<namespace>.<name>
                   (pilot/pkg/networking/core/extension_config_builder.go); the public resource
                   is a TrafficExtension (istio/api extensions/v1alpha1/traffic_extension.proto).
                   A WasmPlugin still works there, translated by istiod into a TrafficExtension
                   named <name>~istio-translated-wasmplugin
                   (pilot/pkg/config/kube/extensions/translate.go): an internal marker, offered
                   only with --resource wasmplugin.
  before 1.26      not supported: the prefix was misspelt "extenstions.istio.io/wasmplugin/"
                   (fixed by istio/istio#55348), and 1.24 has no deny-all FAIL_CLOSE fallback.

Writes DIR (default dist/istio): the plugin resource (wasmplugin.yaml or trafficextension.yaml),
envoyfilter-loopback-listener.yaml with the first HTTP filter named as that version's istiod
serves the plugin, demo-app.yaml and backend.yaml. --url/--sha256 fill in the module (make push).
--check DIR compares a fresh rendering with the manifests in DIR instead (parsed, so comments
may differ) and exits 1 on any difference: the checked-in examples must stay renderings.

Adding a newer Istio: read that tag's pilot/pkg/networking/core/extension_config_builder.go and
pilot/pkg/model/extensions.go (which prefix BuildExtensionConfiguration serves) and
pkg/wasm/convert.go (the FAIL_CLOSE fallback), then add the version to SUPPORTED with its
family; `make test-deploy` and the xDS tests (integration/tests/istio_sidecar.rs) take it up.
"""

import argparse
import copy
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "deploy", "istio")

# minor version -> the resource family istiod of that version serves over ECDS. Checked against
# istio/istio tags 1.26.0 ... 1.29.6 (WasmPluginsByName) and 1.30.0 ... 1.31.0-rc.0, master
# 86c9f01 (TrafficExtensionsByName).
SUPPORTED = {26: "wasmplugin", 27: "wasmplugin", 28: "wasmplugin", 29: "wasmplugin",
             30: "trafficextension", 31: "trafficextension"}
NEWEST = f"1.{max(SUPPORTED)}"

WASMPLUGIN_PREFIX = "extensions.istio.io/wasmplugin/"
TRAFFICEXTENSION_PREFIX = "extensions.istio.io/trafficextension/"
TRANSLATED_MARKER = "~istio-translated-wasmplugin"
SOURCE_NOTE = re.compile(r"^# (This file is the source|The source of every rendering).*?(?=^apiVersion:)",
                         re.S | re.M)


class RenderError(Exception):
    pass


def parse_version(text):
    """'1.31', '1.31.0' or '1.31.0-rc.0' -> 31 (the minor version), if supported."""
    m = re.fullmatch(r"1\.(\d+)(\.\d+(-[0-9A-Za-z.]+)?)?", text or "")
    if not m:
        raise RenderError(f"ISTIO_VERSION {text!r}: expected 1.MINOR[.PATCH], e.g. {NEWEST}")
    minor = int(m.group(1))
    if minor not in SUPPORTED:
        known = ", ".join(f"1.{v}" for v in sorted(SUPPORTED))
        hint = (" (before 1.26 istiod serves WasmPlugins under a misspelt prefix, "
                "extenstions.istio.io/wasmplugin/)") if minor < min(SUPPORTED) else \
            " (a newer Istio: check its ECDS naming and add it to SUPPORTED, see this script's help)"
        raise RenderError(f"Istio 1.{minor} is not supported; supported: {known}{hint}")
    return minor


def family(minor, resource=None):
    """(resource kind rendered, what istiod of that version serves)."""
    serves = SUPPORTED[minor]
    resource = resource or serves
    if resource == "trafficextension" and serves == "wasmplugin":
        raise RenderError(f"Istio 1.{minor} has no TrafficExtension (new in 1.30): use --resource wasmplugin")
    return resource, serves


def ecds_name(minor, resource, namespace, name):
    """The name istiod of Istio 1.<minor> serves this resource under over ECDS."""
    resource, serves = family(minor, resource)
    if serves == "wasmplugin":
        return f"{WASMPLUGIN_PREFIX}{namespace}.{name}"
    if resource == "wasmplugin":
        return f"{TRAFFICEXTENSION_PREFIX}{namespace}.{name}{TRANSLATED_MARKER}"
    return f"{TRAFFICEXTENSION_PREFIX}{namespace}.{name}"


def read(name):
    with open(os.path.join(SOURCE, name)) as f:
        return f.read()


def fill_module(text, url, sha256, indent):
    """Replaces the url and sha256 lines (at `indent`) of a plugin manifest's text."""
    if url is None and sha256 is None:
        return text
    if not url or not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise RenderError("--url and --sha256 go together: an oci:// URL and the image's manifest digest (64 hex)")
    out, n_url = re.subn(rf"^{indent}url: .*$", f"{indent}url: {url}", text, flags=re.M)
    out, n_sha = re.subn(rf'^{indent}sha256: .*$', f'{indent}sha256: "{sha256}"', out, flags=re.M)
    if n_url != 1 or n_sha != 1:
        raise RenderError("the plugin source must have exactly one url and one sha256 line")
    return out


def to_traffic_extension(plugin):
    """The TrafficExtension with the WasmPlugin's fields, mapped as istiod maps them
    (pilot/pkg/config/kube/extensions/translate.go, translateWasmPlugin)."""
    spec = plugin["spec"]
    out_spec = {}
    for key in ("selector", "phase", "priority", "match"):
        if key in spec:
            out_spec[key] = copy.deepcopy(spec[key])
    target_refs = spec.get("targetRefs") or ([spec["targetRef"]] if "targetRef" in spec else None)
    if target_refs:
        out_spec["targetRefs"] = copy.deepcopy(target_refs)
    wasm = {}
    for key in ("url", "sha256", "imagePullPolicy", "imagePullSecret", "pluginConfig", "pluginName",
                "failStrategy", "vmConfig", "type"):
        if key in spec:
            wasm[key] = copy.deepcopy(spec[key])
    out_spec["wasm"] = wasm
    metadata = {k: copy.deepcopy(v) for k, v in plugin["metadata"].items() if k in ("name", "namespace", "labels")}
    return {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "TrafficExtension",
            "metadata": metadata, "spec": out_spec}


def render(version, resource=None, url=None, sha256=None):
    """{file name: text} for Istio `version`."""
    minor = parse_version(version)
    resource, serves = family(minor, resource)
    plugin_text = fill_module(read("wasmplugin.yaml"), url, sha256, "  ")
    plugin = yaml.safe_load(plugin_text)
    if plugin.get("kind") != "WasmPlugin":
        raise RenderError("deploy/istio/wasmplugin.yaml must be a WasmPlugin")
    meta = plugin["metadata"]
    name = ecds_name(minor, resource, meta["namespace"], meta["name"])
    versions = [v for v, f in SUPPORTED.items() if f == serves]
    label = (f"Istio 1.{minor} (the same for 1.{min(versions)}-1.{max(versions)}), "
             f"{'TrafficExtension' if resource == 'trafficextension' else 'WasmPlugin'}")
    note = (f"# Rendered by scripts/istio-manifests.py for {label};\n"
            f"# ECDS name {name}.\n"
            "# Edit the sources in deploy/istio/ and render again: make istio-manifests ISTIO_VERSION=...\n")
    files = {}
    if resource == "wasmplugin":
        files["wasmplugin.yaml"] = SOURCE_NOTE.sub(note, plugin_text, count=1)
    else:
        extension = to_traffic_extension(plugin)
        files["trafficextension.yaml"] = (
            "# loopback-guard as an Istio TrafficExtension (Istio 1.30+): the WasmPlugin of\n"
            "# deploy/istio/wasmplugin.yaml, field by field as istiod itself translates a WasmPlugin\n"
            "# (pilot/pkg/config/kube/extensions/translate.go). docs/istio.md explains every field.\n"
            + note + yaml.safe_dump(extension, sort_keys=False, width=100))

    listener_text = read("envoyfilter-loopback-listener.yaml")
    envoy_filter = yaml.safe_load(listener_text)
    filters = (envoy_filter["spec"]["configPatches"][0]["patch"]["value"]["filter_chains"][0]["filters"][0]
               ["typed_config"]["http_filters"])
    old = filters[0]["name"]
    pattern = re.compile(rf"^(\s*- name: ){re.escape(old)}$", re.M)
    listener_text, n = pattern.subn(lambda m: m.group(1) + name, listener_text)
    if n != 1:
        raise RenderError(f"the listener source must name its first HTTP filter exactly once, found {old!r} {n} times")
    listener_text = SOURCE_NOTE.sub(note, listener_text, count=1)
    rendered = yaml.safe_load(listener_text)
    first = (rendered["spec"]["configPatches"][0]["patch"]["value"]["filter_chains"][0]["filters"][0]
             ["typed_config"]["http_filters"][0]["name"])
    if first != name:
        raise RenderError(f"rendering failed: the first HTTP filter is {first!r}, expected {name!r}")
    files["envoyfilter-loopback-listener.yaml"] = listener_text
    files["demo-app.yaml"] = read("demo-app.yaml")
    files["backend.yaml"] = read("backend.yaml")
    return files


def check(files, directory):
    """Differences between a rendering and the manifests in `directory` (parsed YAML)."""
    found = []
    for name, text in files.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            if name in ("demo-app.yaml", "backend.yaml") and os.path.exists(os.path.join(SOURCE, name)):
                continue  # an example directory may share the sources' copies
            found.append(f"{path}: missing")
            continue
        with open(path) as f:
            if list(yaml.safe_load_all(f)) != list(yaml.safe_load_all(text)):
                found.append(f"{path}: differs from a fresh rendering")
    for other in ("wasmplugin.yaml", "trafficextension.yaml"):
        if other not in files and os.path.exists(os.path.join(directory, other)) and directory != SOURCE:
            found.append(f"{os.path.join(directory, other)}: a resource this version does not use")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--istio-version", default=NEWEST, help=f"1.MINOR[.PATCH] (default {NEWEST})")
    parser.add_argument("--resource", choices=["wasmplugin", "trafficextension"],
                        help="the plugin resource (default: the one that version's istiod serves)")
    parser.add_argument("--url", help="the module's oci:// URL")
    parser.add_argument("--sha256", help="the image's manifest digest (64 hex digits, no sha256: prefix)")
    parser.add_argument("--ecds-name", action="store_true", help="print only the ECDS name")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", default=os.path.join(ROOT, "dist", "istio"))
    where.add_argument("--check", metavar="DIR")
    args = parser.parse_args()
    try:
        if args.ecds_name:
            minor = parse_version(args.istio_version)
            plugin = yaml.safe_load(read("wasmplugin.yaml"))
            print(ecds_name(minor, args.resource, plugin["metadata"]["namespace"], plugin["metadata"]["name"]))
            return 0
        files = render(args.istio_version, args.resource, args.url, args.sha256)
    except RenderError as err:
        print(f"istio-manifests: error: {err}", file=sys.stderr)
        return 2
    if args.check:
        found = check(files, args.check)
        for line in found:
            print(f"istio-manifests: {line}", file=sys.stderr)
        return 1 if found else 0
    os.makedirs(args.out, exist_ok=True)
    for stale in ("wasmplugin.yaml", "trafficextension.yaml"):
        if stale not in files and os.path.exists(os.path.join(args.out, stale)):
            os.remove(os.path.join(args.out, stale))
    for name, text in files.items():
        with open(os.path.join(args.out, name), "w") as f:
            f.write(text)
    print(f"istio-manifests: wrote {', '.join(sorted(files))} to {os.path.relpath(args.out)} "
          f"for Istio {args.istio_version}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
