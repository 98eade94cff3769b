"""The real node (`up --node real`): kubelet, kube-proxy and containerd in namespaces the cluster
makes. Pods are containers that run with the securityContext they ask for, reach the API server
through its Service and nothing outside; and `down`, even after the kubelet and containerd were
killed with SIGKILL, leaves no process, mount, cgroup, network namespace, iptables rule or
changed kernel tunable behind.

One cluster for the module, in a folder of its own; the last test kills and downs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from kubernetes import client, config

from devcluster import DevCluster, tools_dir
from devcluster.netns import KUBELET_SYSCTLS, NODE_IP
from devcluster.ociarchive import busybox_links, layer_tar, write_archive
from devcluster.realnode import PACKAGES, PAUSE_IMAGE, POD_CIDR, cgroup_hierarchies, cgroup_name, import_images

BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
BUSYBOX_IMAGE = "gentask.local/busybox:test"
RENAMED = "gentask-busybox:renamed"
# host paths the node's programs write to by default: they must stay as they were
HOST_PATHS = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/containerd", "/var/lib/containerd",
              "/etc/cni/net.d", "/opt/containerd", "/opt/cni", "/run/netns")
RULE_MARKS = ("KUBE-", "10.244.", "10.96.", NODE_IP, "cni0")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the real node needs root"
    for cmd in ("containerd", "runc", "ctr", "iptables", "nsenter", "unshare"):
        if shutil.which(cmd, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{cmd} is not installed (hack/system-packages.sh {PACKAGES})"
    for built in ("bin/kubelet", "bin/kube-proxy", "images/pause.tar"):
        if not (tools_dir() / built).exists():
            return f"{tools_dir() / built} is not built (hack/build-tools.sh kubelet)"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _iptables_rules() -> set[str]:
    """The host's iptables rules that a node could have made."""
    rules = set()
    for cmd in ("iptables-save", "ip6tables-save"):
        out = subprocess.run([cmd], capture_output=True, text=True).stdout
        rules |= {line for line in out.splitlines() if any(m in line for m in RULE_MARKS)}
    return rules


def host_snapshot() -> dict:
    return {"sysctls": {k: Path("/proc/sys", k).read_text().strip() for k in KUBELET_SYSCTLS},
            "netns": subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout,
            "iptables": _iptables_rules(),
            "paths": {p: os.path.lexists(p) for p in HOST_PATHS}}


def _zombie(pid: str) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True  # gone


def processes_of(root: Path, inodes: set[int]) -> list[str]:
    """Live processes whose command line or working folder is under root, or that are in the
    cluster's namespaces."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid() or _zombie(proc.name):
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
            spaces = {os.stat(proc / "ns" / kind).st_ino for kind in ("net", "mnt")}
        except OSError:
            continue
        if str(root) in cmdline or cwd.startswith(str(root)) or spaces & inodes:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def leftovers(root: Path, inodes: set[int], before: dict) -> dict:
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(root) in line or any(f"[{i}]" in line for i in inodes)]
    cgroups = [str(h / cgroup_name(root)) for h in cgroup_hierarchies() if (h / cgroup_name(root)).exists()]
    after = host_snapshot()
    return {"processes": processes_of(root, inodes), "mounts": mounts, "cgroups": cgroups,
            "changed": {k: (before[k], after[k]) for k in before if before[k] != after[k]},
            "node files": [str(p) for p in (root / "realnode",) if p.exists()]}


def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except client.ApiException as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")


@pytest.fixture(scope="module")
def real():
    """A real-node cluster of this module's own; brought down whatever happens."""
    parent = Path(tempfile.mkdtemp(prefix="dc-real-", dir="/tmp"))
    parent.chmod(0o755)  # PostgreSQL runs as an unprivileged user and must reach its folder
    root = parent / "c"
    before = host_snapshot()
    dev = DevCluster(root, node="real", log=lambda *_: None)
    try:
        state = dev.up(timeout=180)
        api = config.new_client_from_config(str(state.kubeconfig))
        info = json.loads((root / "realnode" / "netns.json").read_text())
        inodes = {info["net"], info["mnt"]}
        yield {"dev": dev, "state": state, "api": api, "root": root, "before": before, "inodes": inodes}
        api.close()
    finally:
        dev.down(quiet=True)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def busybox(real, tmp_path_factory) -> str:
    if not BUSYBOX.exists():
        pytest.skip("no /bin/busybox (Debian's busybox-static) to make a test image from")
    archive = tmp_path_factory.mktemp("images") / "busybox.tar"
    files = {"/bin/busybox": BUSYBOX}
    write_archive(archive, BUSYBOX_IMAGE, layer_tar(files, busybox_links(BUSYBOX, "/bin"), dirs=("tmp",)), ["/bin/sh"])
    assert import_images(real["root"], [archive]) == [BUSYBOX_IMAGE]
    # the way an archive without a full name goes in (buildah's oci-archive): tagged as the kubelet asks
    assert import_images(real["root"], [archive], name=RENAMED) == [f"docker.io/library/{RENAMED}"]
    return BUSYBOX_IMAGE


def _kubectl(real, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(real["state"].kubeconfig)}
    return subprocess.run([str(tools_dir() / "bin" / "kubectl"), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_the_node_is_the_kubelets_and_the_host_keeps_its_kernel_tunables(real):
    node = client.CoreV1Api(real["api"]).read_node("gentask-node")
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version.startswith("v1.")
    assert {a.type: a.address for a in node.status.addresses}["InternalIP"] == NODE_IP
    # the kubelet runs with protectKernelDefaults and is satisfied; the host's values are untouched
    assert host_snapshot()["sysctls"] == real["before"]["sysctls"]
    assert not _iptables_rules() - real["before"]["iptables"]


def test_a_pod_runs_as_containers_with_the_security_context_it_asks_for(real, busybox):
    core = client.CoreV1Api(real["api"])
    core.create_namespaced_pod("default", {"metadata": {"name": "secure"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsUser": 1234, "runAsGroup": 2345, "runAsNonRoot": True},
        "containers": [
            {"name": "main", "image": busybox, "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "id -u; id -g; touch /probe 2>/dev/null || echo read-only; exec sleep 3600"],
             "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                 "capabilities": {"drop": ["ALL"]}}},
            {"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent"}]}})
    pod = _until(lambda: (p := core.read_namespaced_pod("secure", "default")).status.phase == "Running" and p,
                 90, "pod secure to run")
    assert pod.status.pod_ip.startswith(POD_CIDR.rsplit(".", 2)[0] + ".")
    assert all(c.ready for c in pod.status.container_statuses)
    # kubectl logs goes API server → kubelet (its serving certificate, the API server's client one)
    logs = _until(lambda: (out := _kubectl(real, "logs", "secure", "-c", "main").stdout).count("\n") >= 3 and out,
                  30, "the container's output")
    assert logs.split() == ["1234", "2345", "read-only"]
    cli = subprocess.run([sys.executable, "-m", "devcluster", "--root", str(real["root"]), "logs", "default/secure",
                          "main"], capture_output=True, text=True, timeout=30)
    assert cli.stdout == logs, cli  # the pod's log files, in the cluster's folder
    # on the host: the container's process, in the node's cgroups, as uid/gid 1234/2345, no capabilities
    name = cgroup_name(real["root"])
    memory = next(h for h in cgroup_hierarchies() if h.name == "memory") / name
    sleepers = []
    for procs in memory.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                sleepers.append(pid)
    assert len(sleepers) == 1, sleepers
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{sleepers[0]}/status").read_text().splitlines())
    assert status["Uid"].split() == ["1234"] * 4 and status["Gid"].split() == ["2345"] * 4
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
    own_net = os.stat(f"/proc/{sleepers[0]}/ns/net").st_ino
    assert own_net not in real["inodes"] and own_net != os.stat("/proc/self/ns/net").st_ino  # a pod netns


def test_pods_reach_the_api_server_by_its_service_and_nothing_outside(real, busybox):
    out = _kubectl(real, "exec", "secure", "-c", "main", "--", "sh", "-c",
                   "echo | nc -w 3 10.96.0.1 443 && echo service-ok; "
                   f"echo | nc -w 3 {NODE_IP} {real['state'].mongo_port} && echo mongo-ok; "
                   "echo | nc -w 3 192.0.2.1 80 2>&1 || echo no-way-out")
    said = [w for w in out.stdout.split() if w.endswith(("-ok", "-out"))]
    assert said == ["service-ok", "mongo-ok", "no-way-out"], out


def test_a_job_fails_with_its_containers_exit_code(real, busybox):
    batch = client.BatchV1Api(real["api"])
    batch.create_namespaced_job("default", {"metadata": {"name": "exits"}, "spec": {"backoffLimit": 0, "template": {
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "main", "image": RENAMED, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo bye; exit 3"]}]}}}})
    _until(lambda: any(c.type == "Failed" and c.status == "True"
                       for c in batch.read_namespaced_job_status("exits", "default").status.conditions or []),
           90, "Job exits to fail")
    pods = client.CoreV1Api(real["api"]).list_namespaced_pod("default", label_selector="job-name=exits").items
    assert [p.status.container_statuses[0].state.terminated.exit_code for p in pods] == [3]


def test_down_after_sigkill_of_the_kubelet_containerd_and_holder_leaves_nothing_behind(real, busybox):
    root, state = real["root"], real["state"]
    assert processes_of(root, real["inodes"])  # the probe sees the running node (containers included)
    for name in ("kubelet", "containerd", "netns"):  # the namespaces' holder too: the shims keep them alive
        os.kill(state.pids[name], signal.SIGKILL)
    real["dev"].down(quiet=True)
    left = leftovers(root, real["inodes"], real["before"])
    assert left == {"processes": [], "mounts": [], "cgroups": [], "changed": {}, "node files": []}
    assert DevCluster(root).running() is None


def test_the_node_mode_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENTASK_DEVCLUSTER_NODE", "real")
    assert DevCluster(tmp_path).node_mode == "real"
    monkeypatch.delenv("GENTASK_DEVCLUSTER_NODE")
    assert DevCluster(tmp_path).node_mode == "process"
    assert DevCluster(tmp_path, node="real").node_mode == "real"
