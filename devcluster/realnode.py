"""The real node: containerd, the kubelet and kube-proxy, in namespaces the cluster makes.

``python -m devcluster up --node real`` (or GENTASK_DEVCLUSTER_NODE=real) runs it in place of the
process node (devcluster.node). Pods are real containers (runc): images, securityContext,
volumes, probes, resource limits and Service ClusterIPs are the kubelet's and kube-proxy's own.

How it is put together (every path below is under the cluster's folder):

* **namespaces** (devcluster.netns): a holder process ``netns`` makes a network namespace and a
  private mount namespace; the control plane and the node start inside both (``nsenter --net
  --mount``), so pods reach the API server at the node's address (Service ``kubernetes``) and
  nothing the node does is bound on, mounted in, or routed through the host. Host-side users
  (tests, ``make run``'s operator and API, kubectl) keep the 127.0.0.1 URL of the kubeconfig: the
  ``forwarder`` relays the API server's and etcd's host ports into the namespace. PostgreSQL and
  FerretDB stay on the host's loopback (MONGO_URL unchanged); the forwarder relays
  NODE_IP:<mongo port> inside to it, so pods use ``pod_mongo_url``.
* **containerd** (``realnode/containerd.toml``): root, state, socket, runc root and CNI
  configuration all under ``realnode/``; runc (crun cannot run on the hybrid cgroup layout), the
  pause image imported from ``$GENTASK_TOOLS_DIR/images/pause.tar`` as ``sandbox_image``, and
  ``restrict_oom_score_adj``. CNI is a bridge ``cni0`` with the pod range POD_CIDR.
* **kubelet** (``realnode/kubelet.yaml``): node ``gentask-node`` at NODE_IP, root dir
  ``realnode/kubelet``, pod logs in ``node/pods`` (kept after down until the next up, like the
  process node's), cgroupfs driver with its cgroups under ``/gentask-<hash of the folder>`` in
  every hierarchy, ``protectKernelDefaults`` (the holder bind-mounts the values it wants).
* **kube-proxy** in iptables mode, its rules in the cluster's namespace; ``masqueradeAll`` so that
  a pod reaching a Service backed by a pod on the same bridge gets its replies.

``down`` (clean_up) stops what is left after the components' own PIDs: containers and shims
(found by namespace, cgroup and command line), then removes the cgroups and ``realnode/``.
Images: ``python -m devcluster --root DIR import-image ARCHIVE...`` (OCI or docker archives, see
import_images) puts more into the node's containerd; pods must use ``imagePullPolicy:
IfNotPresent`` or ``Never`` with a tag that is not ``latest``: no registry is reachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.netns import NODE_IP, NODE_NAME, ns_inode

if TYPE_CHECKING:
    from devcluster.cluster import DevCluster, State

PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"
POD_CIDR = "10.244.0.0/24"
CNI_BIN = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
SYSTEM_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "ip", "iptables")
PACKAGES = "containerd runc containernetworking-plugins iptables"
# what runs inside the namespaces; the rest (PostgreSQL, FerretDB, the operator and API of `make
# run`) stays on the host's loopback as with the process node
IN_NAMESPACES = ("etcd", "apiserver", "controller-manager", "scheduler", "containerd", "kubelet", "kube-proxy")
INWARD = ("etcd", "apiserver")  # host 127.0.0.1:port → the component inside
OUTWARD = ("mongo",)  # NODE_IP:port inside → host 127.0.0.1:port: pods reach FerretDB at NODE_IP
# the standard PATH first: containerd, runc, iptables and mount live in the sbin folders
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def pod_mongo_url(state: State) -> str:
    """MONGO_URL as a pod on the real node reaches FerretDB (through the forwarder)."""
    return f"mongodb://{NODE_IP}:{state.mongo_port}/gentask"


def folder(root: Path) -> Path:
    return root / "realnode"


def runs_real_node(root: Path) -> bool:
    """Whether the cluster in root was started with the real node (its namespaces were made)."""
    return (folder(root.resolve()) / "netns.json").exists()


def cgroup_name(root: Path) -> str:
    """The cgroup (in every hierarchy) that holds this cluster's pods: one a cluster folder."""
    return "gentask-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]


def containerd_socket(root: Path) -> Path:
    return folder(root) / "containerd.sock"


class RealNode:
    """What DevCluster calls in real-node mode: namespaces first, then the node."""

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster
        self.root = cluster.root
        self.dir = folder(cluster.root)
        self.holder: int | None = None

    # ---- checks ------------------------------------------------------------------------------

    def check(self) -> None:
        from devcluster.cluster import ClusterError, tool, tools_dir
        if os.geteuid() != 0:
            raise ClusterError("the real node needs root (namespaces, mounts, cgroups, containerd)")
        missing = [t for t in SYSTEM_TOOLS if shutil.which(t, path=SYSTEM_PATH) is None]
        missing += [f"{CNI_BIN}/{p}" for p in ("bridge", "host-local", "loopback") if not (CNI_BIN / p).exists()]
        if missing:
            raise ClusterError(f"the real node needs {', '.join(missing)}: run "
                               f"`hack/system-packages.sh {PACKAGES}`")
        tool("kubelet"), tool("kube-proxy")  # noqa: B018 (each raises, naming `make tools`, when not built)
        if not (tools_dir() / "images" / "pause.tar").exists():
            raise ClusterError(f"the pause image is not built in {tools_dir() / 'images'}: run "
                               "`hack/build-tools.sh kubelet`")
        for top in ("/var", "/run"):
            if str(self.root).startswith(top + "/"):
                raise ClusterError(f"a real-node cluster folder cannot be under {top} (the node overlays it): "
                                   f"{self.root}")

    # ---- namespaces ----------------------------------------------------------------------------

    def start_namespaces(self, state: State, ports: dict[str, int], timeout: float = 20.0) -> None:
        from devcluster.cluster import SERVICE_CIDR, ClusterError, pid_alive
        self.check()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cluster._start(state, "netns", [
            "unshare", "--net", "--mount", "--propagation", "private", sys.executable, "-m", "devcluster.netns",
            "hold", f"--dir={self.dir}", f"--service-cidr={SERVICE_CIDR}"])
        deadline = time.monotonic() + timeout
        info = None
        while info is None:
            try:
                info = json.loads((self.dir / "netns.json").read_text())
            except (OSError, ValueError):
                if not pid_alive(state.pids["netns"]) or time.monotonic() > deadline:
                    raise ClusterError(f"the namespaces could not be made:\n{self.cluster._tail('netns')}") from None
                time.sleep(0.02)
        if info["pid"] != state.pids["netns"] or info["net"] == ns_inode("self", "net"):
            raise ClusterError(f"the namespace holder is not what was started: {info}")
        self.holder = info["pid"]
        inward = ",".join(str(ports[k]) for k in INWARD if k in ports)
        outward = ",".join(str(ports[k]) for k in OUTWARD if k in ports)
        self.cluster._start(state, "forwarder", [
            sys.executable, "-m", "devcluster.netns", "forward", f"--netns=/proc/{self.holder}/ns/net",
            f"--inward={inward}", f"--outward={outward}"])
        # containerd needs nothing of the control plane: it starts now, the kubelet later (start_node)
        self._write_cni()
        self.cluster._start(state, "containerd", ["containerd", f"--config={self._write_containerd_config()}"],
                            env=self._env())

    def wraps(self, name: str) -> bool:
        return name in IN_NAMESPACES

    def wrap(self, name: str, argv: list[str]) -> list[str]:
        """The command that runs argv inside the cluster's namespaces (the API server also gets its real-node flags)."""
        if argv and argv[0] == "nsenter":  # already wrapped (a restart from state.argv)
            return argv
        if name == "apiserver":
            pki = self.root / "pki"
            argv = [*argv, "--bind-address=0.0.0.0", f"--advertise-address={NODE_IP}",
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                    f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                    f"--kubelet-certificate-authority={pki / 'ca.crt'}"]
        return ["nsenter", f"--net=/proc/{self.holder}/ns/net", f"--mount=/proc/{self.holder}/ns/mnt",
                f"--wd={self.root}", "--", *argv]

    # ---- the node ------------------------------------------------------------------------------

    def start_node(self, state: State, pods: str, timeout: float) -> None:
        from devcluster.cluster import ClusterError, tool, tools_dir
        env = self._env()
        sock = containerd_socket(self.root)
        deadline = time.monotonic() + timeout
        while not _unix_open(sock):
            if time.monotonic() > deadline or not _alive(state.pids["containerd"]):
                raise ClusterError(f"containerd did not start:\n{self.cluster._tail('containerd')}")
            time.sleep(0.05)
        import_images(self.root, [tools_dir() / "images" / "pause.tar"])
        self._make_cgroups()
        kubelet_config = self._write_kubelet_config(pods)
        self.cluster._start(state, "kubelet", [
            str(tool("kubelet")), f"--config={kubelet_config}", f"--kubeconfig={state.kubeconfig}",
            f"--root-dir={self.dir / 'kubelet'}", f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
            "--v=1"], env=env)
        self.cluster._start(state, "kube-proxy", [
            str(tool("kube-proxy")), f"--config={self._write_kube_proxy_config(state)}", "--v=1"], env=env)

    @staticmethod
    def _env() -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
                "PATH": SYSTEM_PATH + os.pathsep + os.environ.get("PATH", "")}

    def _write_cni(self) -> None:
        conf = self.dir / "cni" / "net.d"
        conf.mkdir(parents=True, exist_ok=True)
        doc = {"cniVersion": "1.0.0", "name": "gentask", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]], "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": str(self.dir / "cni" / "ipam")}}]}
        (conf / "10-gentask.conflist").write_text(json.dumps(doc, indent=2))

    def _write_containerd_config(self) -> Path:
        d = self.dir
        text = f"""version = 2
root = "{d / 'containerd' / 'root'}"
state = "{d / 'containerd' / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{containerd_socket(self.root)}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'containerd' / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which('runc', path=SYSTEM_PATH)}"
        Root = "{d / 'runc'}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d / 'cni' / 'net.d'}"
    max_conf_num = 1
"""
        path = d / "containerd.toml"
        path.write_text(text)
        return path

    def _make_cgroups(self) -> None:
        """The kubelet's cgroupRoot must exist in every hierarchy; cpuset needs its cpus and mems set."""
        name = cgroup_name(self.root)
        for hierarchy in cgroup_hierarchies():
            path = hierarchy / name
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((hierarchy / knob).read_text())

    def _write_kubelet_config(self, pods: str) -> Path:
        import yaml
        pki = self.root / "pki"
        logs = self.root / "node" / "pods"
        logs.mkdir(parents=True, exist_ok=True)
        doc = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{containerd_socket(self.root)}",
            "cgroupDriver": "cgroupfs", "failCgroupV1": False, "cgroupRoot": "/" + cgroup_name(self.root),
            "protectKernelDefaults": True, "failSwapOn": False,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
            "address": NODE_IP, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "podLogsDir": str(logs), "maxPods": int(pods), "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf",
            "nodeStatusReportFrequency": "1m", "fileCheckFrequency": "20s", "syncFrequency": "30s",
        }
        path = self.dir / "kubelet.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def _write_kube_proxy_config(self, state: State) -> Path:
        import yaml
        doc = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(state.kubeconfig)}, "hostnameOverride": NODE_NAME,
            "mode": "iptables", "clusterCIDR": POD_CIDR, "bindAddress": NODE_IP,
            "iptables": {"masqueradeAll": True, "minSyncPeriod": "0s", "syncPeriod": "30s"},
            # leave the conntrack table alone: the global knobs are not this namespace's to set
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "metricsBindAddress": "127.0.0.1:10249", "healthzBindAddress": "127.0.0.1:10256",
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path


# ---- images ------------------------------------------------------------------------------------

def normalized(image: str) -> str:
    """The name the kubelet asks containerd for: `gentask:dev` is docker.io/library/gentask:dev."""
    first, _, rest = image.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        image = f"docker.io/{image if rest else 'library/' + image}"
    last = image.rsplit("/", 1)[1]
    return image if ":" in last or "@" in last else image + ":latest"


def import_images(root: Path, archives: list[Path], name: str | None = None) -> list[str]:
    """Import image archives (OCI layout or docker-archive tars) into the node's containerd, in the
    namespace the kubelet uses (k8s.io). Returns the names imported.

    An archive names its image itself: a docker-archive by its RepoTags, an OCI one by the
    `io.containerd.image.name` annotation (devcluster/ociarchive.py writes it). Where it does not
    (buildah's `oci-archive:` has only a tag), give `name` (one archive at a time): the image is
    tagged with it, normalized as the kubelet asks for it (gentask:dev → docker.io/library/gentask:dev).
    """
    from devcluster.cluster import ClusterError
    sock = containerd_socket(root)
    if not _unix_open(sock):
        raise ClusterError(f"no real node runs in {root} (no containerd at {sock})")
    if name and len(archives) != 1:
        raise ClusterError("a name can be given to one archive at a time")
    ctr = ["ctr", f"--address={sock}", "-n", "k8s.io", "images"]
    env = {**os.environ, "PATH": SYSTEM_PATH}
    names = []
    for archive in archives:
        proc = subprocess.run([*ctr, "import", str(archive)], capture_output=True, text=True, env=env)
        got = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("unpacking ")]
        if proc.returncode != 0 or not got:
            raise ClusterError(f"importing {archive} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        if name and normalized(name) not in got:
            tag = subprocess.run([*ctr, "tag", "--force", got[0], normalized(name)], capture_output=True, text=True,
                                 env=env)
            if tag.returncode != 0:
                raise ClusterError(f"tagging {got[0]} as {normalized(name)} failed: {tag.stderr.strip()}")
            got = [normalized(name)]
        names += got
    return names


def has_image(root: Path, name: str, image_id: str) -> bool:
    """Whether the node's containerd holds image_id (the config digest, as `buildah images` or the
    build's iidfile give it) under name: then an import of its archive would change nothing."""
    sock = containerd_socket(root)
    proc = subprocess.run(["ctr", f"--address={sock}", "-n", "k8s.io", "images", "ls"], capture_output=True,
                          text=True, env={**os.environ, "PATH": SYSTEM_PATH})
    if proc.returncode != 0:
        return False
    digests = {}  # ref -> manifest digest; the CRI plugin also names every image by its config digest
    for line in proc.stdout.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            digests[fields[0]] = fields[2]
    by_id = digests.get("sha256:" + image_id.removeprefix("sha256:"))
    return by_id is not None and digests.get(normalized(name)) == by_id


# ---- clean-up ----------------------------------------------------------------------------------

def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: every v1 controller's, and the cgroup2 one."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        point = Path(left.split()[4])
        if fstype in ("cgroup", "cgroup2") and point.is_relative_to(CGROUP_ROOT):
            found.append(point)
    return sorted(set(found))


def _procs_in(paths: list[Path]) -> set[int]:
    pids: set[int] = set()
    for top in paths:
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    pids.update(int(p) for p in Path(dirpath, "cgroup.procs").read_text().split())
                except (OSError, ValueError):
                    pass
    return pids


def _leftovers(root: Path, namespaces: dict[str, int], cgroups: list[Path]) -> set[int]:
    """Processes of this cluster still alive: in its namespaces, in its cgroups, or shims of its containerd
    (they outlive a containerd killed with SIGKILL, and would then hold the namespaces)."""
    mine = {os.getpid(), os.getppid()}
    marker = f"-address\0{containerd_socket(root)}\0".encode()
    found = _procs_in(cgroups)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if any(ns_inode(pid, kind) == inode for kind, inode in namespaces.items()):
                found.add(pid)
            elif marker in (entry / "cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    return {p for p in found if p not in mine and _alive(p)}


def clean_up(root: Path, timeout: float = 15.0) -> list[str]:
    """Everything a real node left once its components' PIDs are stopped: containers, shims, the
    namespaces (they go with their last process), cgroups and the node's files. Safe to call when
    no real node ever ran in root (it then finds nothing)."""
    root = root.resolve()
    d = folder(root)
    name = cgroup_name(root)
    cgroups = [h / name for h in cgroup_hierarchies() if (h / name).exists()]
    if not d.exists() and not cgroups:
        return []
    namespaces: dict[str, int] = {}
    try:
        info = json.loads((d / "netns.json").read_text())
        namespaces = {"net": info["net"], "mnt": info["mnt"]}
    except (OSError, ValueError, KeyError):
        pass
    stopped: list[str] = []
    deadline = time.monotonic() + timeout
    while victims := _leftovers(root, namespaces, cgroups):
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stopped += [f"node process {p}" for p in sorted(victims) if f"node process {p}" not in stopped]
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for top in cgroups:  # deepest first; an emptied cgroup can take a moment to be removable
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
            for _ in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
    if cgroups:
        stopped.append(f"cgroups {name}")
    shutil.rmtree(d, ignore_errors=True)
    return stopped


def _alive(pid: int) -> bool:
    from devcluster.cluster import pid_alive
    return pid_alive(pid)


def _unix_open(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            return True
    except OSError:
        return False
