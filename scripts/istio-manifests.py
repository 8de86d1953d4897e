#!/usr/bin/env python3
"""A thin caller of `loopback-guard istio render` (cli/src/istio.rs), which renders the Istio
manifests for one Istio version and says what changes with the version. This script exists for
the checks that drive the renderer from Python (scripts/validate-manifests.py, the xDS sidecar
tests) and for --check; users run the command itself (make istio-manifests).

  istio-manifests.py --istio-version 1.31 [--resource wasmplugin|trafficextension]
                     [--url oci://REGISTRY:TAG --sha256 HEX] [--out DIR | --check DIR]

Renders the demo: namespace demo, workload app=demo-app, with demo-app.yaml and backend.yaml.
--check DIR compares a fresh rendering with the manifests in DIR instead (parsed, so comments
may differ) and exits 1 on any difference: the checked-in examples must stay renderings.
The command is $LOOPBACK_GUARD_CLI, else the workspace's debug build (built here if needed).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from istio_model import cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "deploy", "istio")
NEWEST = "1.31"


class RenderError(Exception):
    pass


def render(version, resource=None, url=None, sha256=None):
    """{file name: text} for Istio `version`, as `loopback-guard istio render` writes them."""
    args = [cli(), "istio", "render", "--istio-version", version, "--namespace", "demo",
            "--workload", "app=demo-app", "--with-demo"]
    if resource:
        args += ["--resource", resource]
    if url is not None or sha256 is not None:
        if not url or not sha256 or not url.startswith("oci://"):
            raise RenderError("--url and --sha256 go together: an oci:// URL and the image's manifest digest")
        args += ["--image", f"{url}@sha256:{sha256}"]
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(args + ["--out", out], capture_output=True, text=True)
        if done.returncode != 0:
            raise RenderError(done.stderr.strip().removeprefix("loopback-guard: "))
        files = {}
        for name in sorted(os.listdir(out)):
            with open(os.path.join(out, name)) as f:
                files[name] = f.read()
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
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", default=os.path.join(ROOT, "dist", "istio"))
    where.add_argument("--check", metavar="DIR")
    args = parser.parse_args()
    try:
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
