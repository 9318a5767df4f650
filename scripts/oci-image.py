#!/usr/bin/env python3
"""Builds the tokengate OCI image without a container engine (Python standard library only).

The image is what `docker build` makes of the top-level Dockerfile (`FROM scratch`, one layer
holding `plugin.wasm`), in the Wasm image "compat" variant that Istio's WasmPlugin pulls: one
`application/vnd.oci.image.layer.v1.tar+gzip` layer with `plugin.wasm`, a standard OCI image
config, and the manifest annotation `module.wasm.image/variant: compat`.

Writes, byte for byte reproducibly (fixed timestamps and owners; the same wasm gives the same
digests):
  dist/oci/               an OCI image layout (oci-layout, index.json, blobs/sha256/...)
  dist/tokengate-oci.tar  the same layout as one tar (skopeo's `oci-archive:`)

Push with any OCI tool, e.g.
  skopeo copy oci:dist/oci:0.1.0 docker://registry.example.com/tokengate:0.1.0
  oras cp --from-oci-layout dist/oci:0.1.0 registry.example.com/tokengate:0.1.0
  crane push dist/oci registry.example.com/tokengate:0.1.0
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = 0  # all timestamps: reproducible digests


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(members: list[tuple[str, bytes, int]]) -> bytes:
    """A deterministic tar of (name, data, mode) regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            info.mtime = EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=EPOCH, compresslevel=9, filename="") as gz:
        gz.write(data)
    return buf.getvalue()


def _version() -> str:
    try:
        import tomllib  # noqa: PLC0415 (3.11+)
        with open(os.path.join(REPO, "Cargo.toml"), "rb") as f:
            return tomllib.load(f)["package"]["version"]
    except (ImportError, OSError, KeyError):
        return "latest"


def build(wasm_path: str, out_dir: str, tag: str, archive: str | None = None) -> dict:
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    if not wasm.startswith(b"\0asm"):
        raise SystemExit(f"oci-image: {wasm_path} is not a wasm module")
    layer_tar = _tar([("plugin.wasm", wasm, 0o644)])
    layer = _gzip(layer_tar)
    config = json.dumps({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",  # informative only: the module runs on any architecture
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [_sha(layer_tar)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "COPY dist/tokengate.wasm plugin.wasm"}],
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": _sha(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": _sha(layer), "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": "plugin.wasm"}}],
        "annotations": {
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": "tokengate",
            "org.opencontainers.image.description": "tokengate proxy-wasm filter (plugin.wasm) for Envoy/Istio",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.created": "1970-01-01T00:00:00Z",
        },
    }, sort_keys=True, separators=(",", ":")).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": _sha(manifest), "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }, sort_keys=True, separators=(",", ":")).encode()

    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), "index.json": index}
    for blob in (layer, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob

    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    for rel, data in files.items():
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    if archive:
        os.makedirs(os.path.dirname(os.path.abspath(archive)), exist_ok=True)
        with open(archive, "wb") as f:
            f.write(_tar([(rel, data, 0o644) for rel, data in sorted(files.items())]))
    return {"tag": tag, "manifest_digest": _sha(manifest), "layer_digest": _sha(layer),
            "wasm_sha256": hashlib.sha256(wasm).hexdigest(), "out": out_dir, "archive": archive}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--wasm", default=os.path.join(REPO, "dist", "tokengate.wasm"))
    ap.add_argument("--out", default=os.path.join(REPO, "dist", "oci"), help="OCI layout directory")
    ap.add_argument("--archive", default=os.path.join(REPO, "dist", "tokengate-oci.tar"),
                    help="the layout as one tar ('' for none)")
    ap.add_argument("--tag", default=_version(), help="reference name in index.json (default: Cargo version)")
    args = ap.parse_args(argv)
    info = build(args.wasm, args.out, args.tag, args.archive or None)
    rel = lambda p: os.path.relpath(p, os.getcwd()) if p else p  # noqa: E731
    print(f"oci-image: {rel(info['out'])} (tag {info['tag']}) and {rel(info['archive'])}")
    print(f"  manifest {info['manifest_digest']}  (WasmPlugin spec.sha256: {info['manifest_digest'][7:]})")
    print(f"  plugin.wasm sha256 {info['wasm_sha256']}")
    print(f"  push: skopeo copy oci:{rel(info['out'])}:{info['tag']} docker://REGISTRY/tokengate:{info['tag']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
