#!/usr/bin/env python3
"""Packs a Wasm module as OCI images that Istio's agent can pull, and checks such images.

  oci_layout.py build   --module M.wasm --out DIR [--root-id ID]
  oci_layout.py extract --layout DIR --ref REF --variant image|artifact --out M.wasm

`build` writes an OCI image layout (https://github.com/opencontainers/image-spec, layout.md) with
two manifests, named in index.json by `org.opencontainers.image.ref.name`:

  image     the "compat" variant: one tar+gzip layer holding `plugin.wasm`
            (application/vnd.oci.image.layer.v1.tar+gzip), so standard tools handle it;
  artifact  the Wasm artifact ("oci") variant: exactly two layers, the runtime config
            (application/vnd.module.wasm.config.v1+json) and the raw module
            (application/vnd.module.wasm.content.layer.v1+wasm).

These are the two formats istio-agent accepts (pkg/wasm/imagefetcher.go: the compat variant is
read from the *last* layer, the artifact variant requires exactly two layers and picks the one of
type ...content.layer.v1+wasm). The output depends only on the module's bytes and the root id: no
time stamps, owners or host names go in, JSON is written with sorted keys and no spaces, and gzip
gets a zero mtime and no file name. The same module therefore always gives the same digests, so a
digest can be reviewed and pinned (WasmPlugin `sha256`).

`extract` reads an image back from a layout (for example one that skopeo pulled from a registry),
checks it the way istio-agent would, and writes the module. It exits non-zero with the reason if
the image is not in the expected format.

Standard library only: it runs with any python3 >= 3.8.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
MT_WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"

PLUGIN_FILE = "plugin.wasm"  # the name istio-agent looks for in a compat layer
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
WASM_MAGIC = b"\x00asm"


class FormatError(Exception):
    """The image is not in a format istio-agent accepts."""


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


class Layout:
    """Content-addressed blobs under DIR/blobs/sha256."""

    def __init__(self, root):
        self.root = root

    def blob_path(self, digest):
        algo, _, hexpart = digest.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise FormatError(f"unsupported digest {digest!r}")
        return os.path.join(self.root, "blobs", "sha256", hexpart)

    def put(self, data, media_type, annotations=None):
        digest = "sha256:" + sha256_hex(data)
        path = self.blob_path(digest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            desc["annotations"] = annotations
        return desc

    def get(self, desc):
        with open(self.blob_path(desc["digest"]), "rb") as f:
            data = f.read()
        if len(data) != desc["size"] or "sha256:" + sha256_hex(data) != desc["digest"]:
            raise FormatError(f"blob {desc['digest']} does not match its descriptor")
        return data


def deterministic_tar(name, data):
    """A ustar archive with one regular file, owned by 0:0, mode 0644, mtime 0."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def deterministic_gzip(data):
    # mtime=0 and no file name in the header (what `gzip -n` does); level 9 is fixed.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def abi_versions(module):
    """The proxy-wasm ABI versions the module exports (names like proxy_abi_version_0_2_1)."""
    return sorted({m.decode() for m in re.findall(rb"proxy_abi_version_[0-9_]+[0-9]", module)})


def build(module_path, out, root_id):
    with open(module_path, "rb") as f:
        module = f.read()
    if module[:4] != WASM_MAGIC:
        raise SystemExit(f"{module_path}: not a Wasm module (no \\0asm header)")

    # Start from an empty directory: a stale blob must not survive into a new layout.
    if os.path.exists(out):
        for dirpath, dirnames, filenames in os.walk(out, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                os.rmdir(os.path.join(dirpath, name))
    os.makedirs(out, exist_ok=True)
    layout = Layout(out)

    # (a) compat image: the module as plugin.wasm in a single tar+gzip layer.
    tar = deterministic_tar(PLUGIN_FILE, module)
    layer = layout.put(deterministic_gzip(tar), MT_LAYER_TGZ)
    image_config = {
        # GOOS/GOARCH-style values for a WASI module; Istio reads no platform, and no container
        # runtime should try to run this image.
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256_hex(tar)]},
    }
    config_desc = layout.put(canonical_json(image_config), MT_IMAGE_CONFIG)
    image_manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config_desc,
        "layers": [layer],
        # The compat spec asks for this annotation on OCI-media-type compat images.
        "annotations": {"module.wasm.image/variant": "compat"},
    }

    # (b) artifact: runtime config + raw module, each its own layer. The runtime config is also
    # the manifest's config, so tools that read an artifact's type from the config see it too.
    runtime_config = {"type": "envoy_proxy", "config": {"root_ids": [root_id]}}
    abis = abi_versions(module)
    if abis:
        runtime_config["abiVersions"] = abis
    rc_bytes = canonical_json(runtime_config)
    wasm_config_desc = layout.put(rc_bytes, MT_WASM_CONFIG)
    artifact_manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": wasm_config_desc,
        "layers": [
            layout.put(rc_bytes, MT_WASM_CONFIG, {TITLE: "runtime-config.json"}),
            layout.put(module, MT_WASM_CONTENT, {TITLE: PLUGIN_FILE}),
        ],
    }

    manifests = []
    for ref, manifest in (("image", image_manifest), ("artifact", artifact_manifest)):
        desc = layout.put(canonical_json(manifest), MT_MANIFEST, {REF_NAME: ref})
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": manifests}
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))

    summary = {
        "module_sha256": sha256_hex(module),
        "module_size": len(module),
        "image": manifests[0]["digest"],
        "artifact": manifests[1]["digest"],
    }
    return summary


def find_manifest(layout, ref):
    with open(os.path.join(layout.root, "index.json"), "rb") as f:
        index = json.load(f)
    matches = [m for m in index.get("manifests", []) if m.get("annotations", {}).get(REF_NAME) == ref]
    if len(matches) != 1:
        raise FormatError(f"index.json has {len(matches)} manifests named {ref!r}, expected 1")
    desc = matches[0]
    if desc.get("mediaType") != MT_MANIFEST:
        raise FormatError(f"{ref}: manifest media type {desc.get('mediaType')!r}, expected {MT_MANIFEST}")
    manifest = json.loads(layout.get(desc))
    if manifest.get("mediaType", MT_MANIFEST) != MT_MANIFEST:
        raise FormatError(f"{ref}: manifest says mediaType {manifest.get('mediaType')!r}")
    return desc, manifest


def extract_image(layout, manifest):
    """The compat variant, as istio-agent reads it: the last layer, tar+gzip, plugin.wasm."""
    layers = manifest.get("layers", [])
    if len(layers) != 1:
        # Istio takes the last of any number; this project ships exactly one.
        raise FormatError(f"image: {len(layers)} layers, expected 1")
    last = layers[-1]
    if last["mediaType"] != MT_LAYER_TGZ:
        raise FormatError(f"image: layer media type {last['mediaType']!r}, expected {MT_LAYER_TGZ}")
    if manifest["config"]["mediaType"] != MT_IMAGE_CONFIG:
        raise FormatError(f"image: config media type {manifest['config']['mediaType']!r}")
    blob = layout.get(last)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        for member in tar.getmembers():
            if os.path.basename(member.name) == PLUGIN_FILE and member.isreg():
                f = tar.extractfile(member)
                if f is None:
                    break
                return f.read()
    raise FormatError(f"image: no {PLUGIN_FILE} in the layer")


def extract_artifact(layout, manifest):
    """The artifact variant, as istio-agent reads it: exactly two layers, one of them raw Wasm."""
    layers = manifest.get("layers", [])
    types = [layer["mediaType"] for layer in layers]
    if sorted(types) != sorted([MT_WASM_CONFIG, MT_WASM_CONTENT]):
        raise FormatError(f"artifact: layer media types {types}, expected {[MT_WASM_CONFIG, MT_WASM_CONTENT]}")
    config = json.loads(layout.get(layers[types.index(MT_WASM_CONFIG)]))
    if config.get("type") != "envoy_proxy":
        raise FormatError(f"artifact: runtime config type {config.get('type')!r}, expected 'envoy_proxy'")
    return layout.get(layers[types.index(MT_WASM_CONTENT)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write an OCI image layout with both variants")
    b.add_argument("--module", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--root-id", default="loopback_guard")
    e = sub.add_parser("extract", help="check one image of a layout and write its module")
    e.add_argument("--layout", required=True)
    e.add_argument("--ref", required=True)
    e.add_argument("--variant", required=True, choices=["image", "artifact"])
    e.add_argument("--out", required=True)
    args = parser.parse_args()

    if args.cmd == "build":
        print(json.dumps(build(args.module, args.out, args.root_id), indent=2, sort_keys=True))
        return 0

    layout = Layout(args.layout)
    try:
        desc, manifest = find_manifest(layout, args.ref)
        module = (extract_image if args.variant == "image" else extract_artifact)(layout, manifest)
        if module[:4] != WASM_MAGIC:
            raise FormatError(f"{args.ref}: extracted file is not a Wasm module")
    except (FormatError, OSError, KeyError, ValueError, tarfile.TarError) as err:
        print(f"oci_layout.py: {args.layout}:{args.ref}: {err}", file=sys.stderr)
        return 1
    with open(args.out, "wb") as f:
        f.write(module)
    print(json.dumps({"manifest": desc["digest"], "layers": [l["mediaType"] for l in manifest["layers"]],
                      "module_sha256": sha256_hex(module)}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
