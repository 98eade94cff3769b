"""The real node's pure parts: the OCI archive writer, image-name normalization, the config files."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path

import yaml

from devcluster.cluster import DevCluster
from devcluster.ociarchive import layer_tar, write_archive
from devcluster.realnode import RealNode, cgroup_name, normalized


def _archive(tmp_path: Path, name: str = "example.local/tool:1") -> tuple[Path, str]:
    exe = tmp_path / "tool"
    exe.write_bytes(b"#!/bin/sh\necho hi\n")
    exe.chmod(0o755)
    out = tmp_path / "tool.tar"
    digest = write_archive(out, name, layer_tar({"/bin/tool": exe}, {"/bin/t": "tool"}, dirs=("tmp",)), ["/bin/tool"],
                           user="1000:1000")
    return out, digest


def test_the_archive_is_an_oci_layout_that_names_its_image(tmp_path):
    out, digest = _archive(tmp_path)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))

        def blob(d: str) -> bytes:
            return tar.extractfile(f"blobs/sha256/{d.split(':')[1]}").read()

        manifest = json.loads(blob(digest))
        config = json.loads(blob(manifest["config"]["digest"]))
        layer = tarfile.open(fileobj=io.BytesIO(blob(manifest["layers"][0]["digest"])))
        members = {m.name: m for m in layer.getmembers()}
    assert {"oci-layout", "index.json"} <= set(names)
    entry = index["manifests"][0]
    assert entry["digest"] == digest and entry["annotations"]["io.containerd.image.name"] == "example.local/tool:1"
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1"
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["config"]["User"] == "1000:1000"
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]  # uncompressed: diff id = digest
    assert members["bin/tool"].mode == 0o755 and members["bin/t"].issym() and members["bin/t"].linkname == "tool"
    assert stat.S_IMODE(members["tmp"].mode) == 0o1777
    assert all(m.uid == 0 and m.mtime == 0 for m in members.values())


def test_the_same_inputs_give_the_same_digest(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert _archive(a)[1] == _archive(b)[1]


def test_image_names_are_normalized_as_the_kubelet_asks_for_them():
    assert normalized("gentask:dev") == "docker.io/library/gentask:dev"
    assert normalized("gentask") == "docker.io/library/gentask:latest"
    assert normalized("acme/gentask:1") == "docker.io/acme/gentask:1"
    assert normalized("ghcr.io/gentask/gentask:0.1.0") == "ghcr.io/gentask/gentask:0.1.0"
    assert normalized("localhost:5000/x") == "localhost:5000/x:latest"


def test_the_node_keeps_its_state_under_the_cluster_folder(tmp_path):
    node = RealNode(DevCluster(tmp_path / "c", node="real", log=lambda *_: None))
    node.dir.mkdir(parents=True)
    containerd = node._write_containerd_config().read_text()
    kubelet = yaml.safe_load(node._write_kubelet_config("20").read_text())
    folder = str(tmp_path / "c")
    for key in ("root", "state", "address", "path", "Root", "conf_dir"):
        assert all(folder in line for line in containerd.splitlines() if line.strip().startswith(f"{key} ="))
    assert 'sandbox_image = "registry.k8s.io/pause:' in containerd and "restrict_oom_score_adj = true" in containerd
    assert kubelet["podLogsDir"].startswith(folder) and kubelet["containerRuntimeEndpoint"].startswith(f"unix://{folder}")
    assert kubelet["cgroupRoot"] == "/" + cgroup_name(tmp_path / "c") and kubelet["protectKernelDefaults"] is True
    assert kubelet["maxPods"] == 20 and kubelet["cgroupDriver"] == "cgroupfs" and kubelet["failCgroupV1"] is False


def test_each_cluster_folder_has_its_own_cgroup(tmp_path):
    assert cgroup_name(tmp_path / "a") != cgroup_name(tmp_path / "b")
    assert cgroup_name(tmp_path / "a") == cgroup_name(tmp_path / "a")
