"""A one-layer OCI image archive (an OCI image layout in a tar), written without a container engine.

    python devcluster/ociarchive.py --name registry.k8s.io/pause:3.10.2 --out pause.tar \\
        --file /pause=./pause --entrypoint /pause --user 65535:65535
    python devcluster/ociarchive.py --name gentask.local/busybox:1 --out busybox.tar \\
        --file /bin/busybox=/bin/busybox --busybox-links /bin

What `ctr -n k8s.io images import` (and so the real node, see devcluster.realnode) reads: the
manifest in index.json carries its name in the ``io.containerd.image.name`` annotation. The layer
is an uncompressed tar with fixed owners and times, so the same inputs give the same digests.
Standard library only: hack/build-tools.sh runs this file as a script, before any venv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    return info


def layer_tar(files: dict[str, Path], links: dict[str, str], dirs: tuple[str, ...] = ()) -> bytes:
    """An uncompressed layer: parent folders, then files (mode kept), then symlinks, sorted."""
    folders = set(dirs)
    for path in list(files) + list(links):
        parts = Path(path.lstrip("/")).parts[:-1]
        folders.update("/".join(parts[:i + 1]) for i in range(len(parts)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(f.strip("/") for f in folders if f.strip("/")):
            tar.addfile(_info(d + "/", tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755))
        for path in sorted(files):
            data = files[path].read_bytes()
            tar.addfile(_info(path, tarfile.REGTYPE, files[path].stat().st_mode & 0o7777, len(data)), io.BytesIO(data))
        for path in sorted(links):
            tar.addfile(_info(path, tarfile.SYMTYPE, 0o777, link=links[path]))
    return buf.getvalue()


def _blob(data: bytes) -> tuple[str, int]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def write_archive(out: Path, name: str, layer: bytes, entrypoint: list[str], cmd: list[str] | None = None,
                  user: str = "", env: list[str] | None = None, workdir: str = "/", arch: str = "amd64") -> str:
    """Write the archive; return the manifest digest."""
    layer_digest, layer_size = _blob(layer)
    config = {"architecture": arch, "os": "linux",
              "config": {k: v for k, v in {"Entrypoint": entrypoint, "Cmd": cmd, "User": user,
                                           "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                                          "/sbin:/bin"],
                                           "WorkingDir": workdir}.items() if v},
              "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
              "history": [{"created_by": "devcluster/ociarchive.py"}]}
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest, config_size = _blob(config_bytes)
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
                "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size}]}
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest, manifest_size = _blob(manifest_bytes)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [{
        "mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": manifest_size,
        "platform": {"architecture": arch, "os": "linux"},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}}]}
    entries = [("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
               ("index.json", json.dumps(index, sort_keys=True).encode())]
    entries += [(f"blobs/sha256/{d.split(':', 1)[1]}", b)
                for d, b in ((layer_digest, layer), (config_digest, config_bytes), (manifest_digest, manifest_bytes))]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for folder in ("blobs/", "blobs/sha256/"):
            tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
        for path, data in entries:
            tar.addfile(_info(path, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    tmp.replace(out)
    return manifest_digest


def busybox_links(busybox: Path, folder: str) -> dict[str, str]:
    """One symlink an applet (sh, id, sleep, ...) in folder, pointing at busybox."""
    names = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    return {f"{folder.rstrip('/')}/{n}": "busybox" for n in names if n != "busybox"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="image name, e.g. registry.k8s.io/pause:3.10.2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--file", action="append", default=[], metavar="IMAGE_PATH=SOURCE")
    parser.add_argument("--busybox-links", metavar="FOLDER", help="add busybox applet links in FOLDER")
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--cmd", action="append")
    parser.add_argument("--user", default="")
    args = parser.parse_args(argv)
    files = {dst: Path(src) for dst, _, src in (f.partition("=") for f in args.file)}
    links: dict[str, str] = {}
    if args.busybox_links:
        busybox = next((src for dst, src in files.items() if dst.endswith("/busybox")), None)
        if busybox is None:
            parser.error("--busybox-links needs a --file .../busybox=SOURCE")
        links = busybox_links(busybox, args.busybox_links)
    digest = write_archive(args.out, args.name, layer_tar(files, links, dirs=("tmp",)), args.entrypoint, args.cmd,
                           args.user)
    print(f"{args.name} {digest} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
