"""The local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, PostgreSQL
with FerretDB over it (the MongoDB) and a process node, on loopback and free ports, started and
stopped as one.

Everything lives in one folder (default ``.devcluster``): ``kubeconfig`` (admin), ``env``
(sourceable: KUBECONFIG, MONGO_URL, PATH with the cluster's kubectl and helm), ``state.json``
(ports and the PIDs this cluster started), ``logs/`` (one file a component) and ``node/pods/``
(one folder a pod: its container logs and kubeconfig). ``down`` stops by PID exactly what ``up``
started, pods included, and removes the data, so the next ``up`` starts clean.

The node is the process node (devcluster.node) by default; ``node="real"`` (``up --node real``,
or GENTASK_DEVCLUSTER_NODE=real) runs the kubelet, kube-proxy and containerd instead, with the
control plane, in namespaces of the cluster's (devcluster.realnode, devcluster.netns).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devcluster.realnode import RealNode

DEFAULT_ROOT = Path(".devcluster")
# the checkout this package lives in: its processes (the node) import `devcluster` from there
CHECKOUT = Path(__file__).resolve().parents[1]
KUBE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
ALL_BINARIES = KUBE_BINARIES + ("ferretdb", "helm")
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"
# Added to the API server's defaults (which already hold most of these): as in a real cluster.
ADMISSION = ("NamespaceLifecycle,LimitRanger,ServiceAccount,Priority,DefaultTolerationSeconds,"
             "PodSecurity,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,"
             "ValidatingAdmissionWebhook")
RESTARTABLE = ("ferretdb",)
STOP_ORDER = ("api", "operator", "node", "kube-proxy", "kubelet", "containerd", "scheduler", "controller-manager",
              "ferretdb", "postgres", "apiserver", "etcd", "forwarder", "netns")
NODE_MODES = ("process", "real")  # real: devcluster.realnode (kubelet + containerd in namespaces of the cluster's)


class ClusterError(RuntimeError):
    """The cluster could not start; the message says which component and why."""


def tools_dir() -> Path:
    return Path(os.environ.get("GENTASK_TOOLS_DIR", Path.home() / ".cache" / "gentask" / "tools"))


def tool(name: str) -> Path:
    path = tools_dir() / "bin" / name
    if not path.exists():
        raise ClusterError(f"{name} is not built in {path.parent}: run `make tools` first")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stop_pid(pid: int, expect: str, grace: float = 10.0) -> bool:
    """SIGTERM the process group of pid (if its command line still contains expect), then SIGKILL."""
    if not pid_alive(pid) or expect not in _cmdline(pid):
        return False
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            time.sleep(0.05)
    return not pid_alive(pid)


@dataclass
class State:
    root: Path
    apiserver_port: int
    mongo_port: int
    pids: dict[str, int]
    started_at: float
    argv: dict[str, list[str]] | None = None

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/gentask"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def save(self) -> None:
        doc = {"apiserver_port": self.apiserver_port, "mongo_port": self.mongo_port, "pids": self.pids,
               "started_at": self.started_at, "argv": self.argv or {}}
        (self.root / "state.json").write_text(json.dumps(doc, indent=2))

    @classmethod
    def load(cls, root: Path) -> State | None:
        try:
            doc = json.loads((root / "state.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(root=root, apiserver_port=doc["apiserver_port"], mongo_port=doc["mongo_port"],
                   pids=doc["pids"], started_at=doc["started_at"], argv=doc.get("argv") or {})


class DevCluster:
    def __init__(self, root: Path = DEFAULT_ROOT, node_cpu: str = "8", node_memory: str = "16Gi",
                 node_pods: str = "110", log=print, node: str | None = None, audit: bool | None = None) -> None:
        self.root = root.resolve()
        self.node_capacity = (node_cpu, node_memory, node_pods)
        self.log = log
        self.node_mode = node or os.environ.get("GENTASK_DEVCLUSTER_NODE") or "process"
        if self.node_mode not in NODE_MODES:
            raise ClusterError(f"unknown node mode {self.node_mode!r}: expected one of {', '.join(NODE_MODES)}")
        self._real: RealNode | None = None  # the RealNode of an `up` in real mode
        # audit: the API server logs every write (Metadata level) to <root>/logs/audit.log
        self.audit = audit if audit is not None else os.environ.get("GENTASK_DEVCLUSTER_AUDIT", "") not in ("", "0")
        # profiling: the API server serves /debug/pprof (go tool pprof) to the admin, for benchmarks' questions
        self.profiling = os.environ.get("GENTASK_DEVCLUSTER_PROFILING", "") not in ("", "0")

    # ---- inspection ------------------------------------------------------------------------

    def state(self) -> State | None:
        return State.load(self.root)

    def running(self) -> State | None:
        """The state of a cluster whose every process is alive and whose API server answers."""
        state = self.state()
        if state is None or not all(pid_alive(p) for p in state.pids.values()):
            return None
        return state if self._healthy(state) else None

    def _healthy(self, state: State) -> bool:
        try:
            self._get(state, "/readyz")
            return True
        except Exception:  # any failure to answer means not healthy
            return False

    def _get(self, state: State, path: str) -> str:
        ctx = ssl.create_default_context(cafile=str(self.root / "pki" / "ca.crt"))
        token = (self.root / "pki" / "admin.token").read_text().strip()
        req = urllib.request.Request(state.server + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=3) as resp:
            return resp.read().decode()

    # ---- up ----------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> State:
        existing = self.running()
        if existing is not None:
            self.log(f"devcluster already running at {existing.server}")
            return existing
        if self.state() is not None:
            self.down(quiet=True)
        binaries = {name: tool(name) for name in KUBE_BINARIES + ("ferretdb",)}
        from devcluster.postgres import Postgres
        postgres = Postgres(self.root)  # PostgreSQL missing or out of its user's reach: fail before starting
        t0 = time.monotonic()
        self._clean_data(logs_too=True)
        for sub in ("logs", "pki", "etcd", "ferretdb", "node"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        from devcluster.pki import write_pki
        write_pki(self.root / "pki")
        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "mongo", "ferret_debug", "postgres")}
        state = State(self.root, ports["apiserver"], ports["mongo"], {}, time.time())
        self._write_kubeconfig(state)
        if self.node_mode == "real":
            from devcluster.realnode import RealNode
            self._real = RealNode(self)
        try:
            if self._real is not None:  # the namespaces (and forwarder) the control plane and node start in
                self._real.start_namespaces(state, ports)
            postgres.launch(self, state, ports["postgres"])  # initdb runs while the control plane starts
            self._start(state, "etcd", [
                str(binaries["etcd"]), "--name=gentask", f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
                f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
                f"--initial-cluster=gentask=http://127.0.0.1:{ports['etcd_peer']}",
                "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296"])
            self._wait(state, "etcd", lambda: _tcp_open(ports["etcd"]), timeout)
            pki = self.root / "pki"
            self._start(state, "apiserver", [
                str(binaries["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
                "--authorization-mode=RBAC", f"--enable-admission-plugins={ADMISSION}",
                f"--service-account-issuer={ISSUER}", f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}", f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true", f"--profiling={'true' if self.profiling else 'false'}", "--v=1",
                "--event-ttl=1h", "--max-requests-inflight=800", "--max-mutating-requests-inflight=400",
                *self._audit_flags(), *self._kubelet_flags()])
            self._wait(state, "apiserver", lambda: self._healthy(state), timeout)
            kubeconfig = str(state.kubeconfig)
            self._start(state, "controller-manager", [
                str(binaries["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=true",
                f"--root-ca-file={pki / 'ca.crt'}", f"--service-account-private-key-file={pki / 'sa.key'}",
                "--controllers=*", "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-job-syncs=20",
                "--concurrent-gc-syncs=20", "--v=1"])
            self._start(state, "scheduler", [
                str(binaries["kube-scheduler"]), f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false", "--secure-port=0", "--kube-api-qps=200", "--kube-api-burst=400", "--v=1"])
            postgres_url = postgres.wait(self, state, timeout)
            self._start(state, "ferretdb", [
                str(binaries["ferretdb"]), "--handler=postgresql", f"--postgresql-url={postgres_url}",
                f"--listen-addr=127.0.0.1:{ports['mongo']}", f"--debug-addr=127.0.0.1:{ports['ferret_debug']}",
                f"--state-dir={self.root / 'ferretdb'}", "--telemetry=disable", "--log-level=warn"])
            cpu, memory, pods = self.node_capacity
            if self._real is not None:  # containerd, kubelet, kube-proxy (the capacity is the machine's)
                self._real.start_node(state, pods, timeout)
            else:
                self._start(state, "node", [
                    sys.executable, "-m", "devcluster.node", f"--kubeconfig={kubeconfig}",
                    f"--root={self.root / 'node'}", f"--cpu={cpu}", f"--memory={memory}", f"--pods={pods}"])
            self._wait(state, "ferretdb", lambda: _tcp_open(ports["mongo"]), timeout)
            self._wait(state, "node" if self._real is None else "kubelet", lambda: self._node_ready(state), timeout)
            self._wait(state, "controller-manager",
                       lambda: '"name":"default"' in self._get(state, "/api/v1/namespaces/default/serviceaccounts"),
                       timeout)
        except BaseException:
            self.down(quiet=True)
            raise
        self._write_env(state)
        self.log(f"devcluster up in {time.monotonic() - t0:.1f}s: API {state.server}, MongoDB {state.mongo_url}")
        return state

    def _start(self, state: State, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        logf = open(self.root / "logs" / f"{name}.log", "ab")  # handed to the child
        if env is None:
            env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG",)}
        env = with_checkout(env)
        if self._real is not None and self._real.wraps(name):  # real node: inside the cluster's namespaces
            argv = self._real.wrap(name, argv)
        try:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=self.root)
        finally:
            logf.close()
        state.pids[name] = proc.pid
        if name in RESTARTABLE:
            state.argv = {**(state.argv or {}), name: argv}
        state.save()

    def _wait(self, state: State, name: str, check, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = state.pids[name]
            if not pid_alive(pid):
                raise ClusterError(f"{name} exited during start-up:\n{self._tail(name)}")
            try:
                if check():
                    return
            except Exception:  # not ready yet: the component may still be starting
                pass
            time.sleep(0.1)
        raise ClusterError(f"{name} did not become ready within {timeout:.0f}s:\n{self._tail(name)}")

    def _tail(self, name: str, lines: int = 20) -> str:
        path = self.root / "logs" / f"{name}.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = []
        return "\n".join(f"    {line}" for line in text) + f"\n  (full log: {path})"

    def _node_ready(self, state: State) -> bool:
        doc = json.loads(self._get(state, "/api/v1/nodes/gentask-node"))
        return any(c["type"] == "Ready" and c["status"] == "True" for c in doc["status"].get("conditions", []))

    def _kubelet_flags(self) -> list[str]:
        """How the API server reaches the process node's log endpoint (`kubectl logs`); the real
        node's flags come with its namespaces (realnode.wrap)."""
        if self._real is not None:
            return []
        pki = self.root / "pki"
        return ["--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}"]

    def _audit_flags(self) -> list[str]:
        """With audit: the policy file (writes only, Metadata level) and the API server's flags for it."""
        if not self.audit:
            return []
        policy = self.root / "audit-policy.yaml"
        policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
                          "- level: Metadata\n  verbs: [create, update, patch, delete, deletecollection]\n"
                          "- level: None\n")
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.root / 'logs' / 'audit.log'}",
                "--audit-log-maxsize=0"]  # 0: one file, never rotated

    def _write_kubeconfig(self, state: State) -> None:
        import yaml
        token = (self.root / "pki" / "admin.token").read_text().strip()
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "gentask-dev",
               "clusters": [{"name": "gentask-dev", "cluster": {
                   "server": state.server, "certificate-authority": str(self.root / "pki" / "ca.crt")}}],
               "users": [{"name": "admin", "user": {"token": token}}],
               "contexts": [{"name": "gentask-dev", "context": {"cluster": "gentask-dev", "user": "admin"}}]}
        state.kubeconfig.write_text(yaml.safe_dump(doc))
        state.kubeconfig.chmod(0o600)

    def user_kubeconfig(self, username: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig for a real user of the running cluster: a client certificate (CN username,
        O groups) signed by its CA, written to <root>/users/<username>.kubeconfig. The user may do
        nothing until RBAC allows it (kubectl create rolebinding ... --user <username>)."""
        import yaml

        from devcluster.pki import write_user
        state = self.running()
        if state is None:
            raise ClusterError("the cluster is not running (start it with `python -m devcluster up`)")
        crt, key = write_user(self.root / "pki", username, groups)
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": f"gentask-dev-{crt.stem}",
               "clusters": [{"name": "gentask-dev", "cluster": {
                   "server": state.server, "certificate-authority": str(self.root / "pki" / "ca.crt")}}],
               "users": [{"name": username, "user": {"client-certificate": str(crt), "client-key": str(key)}}],
               "contexts": [{"name": f"gentask-dev-{crt.stem}", "context": {"cluster": "gentask-dev",
                                                                            "user": username}}]}
        folder = self.root / "users"
        folder.mkdir(exist_ok=True)
        path = folder / f"{crt.stem}.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def _write_env(self, state: State) -> None:
        bin_dir = tools_dir() / "bin"
        (self.root / "env").write_text(
            f"# source this file: . {self.root / 'env'}\n"
            f"export KUBECONFIG={state.kubeconfig}\n"
            f"export MONGO_URL={state.mongo_url}\n"
            f"export GENTASK_DEVCLUSTER={self.root}\n"
            f"export PATH={bin_dir}:$PATH\n")

    # ---- fault drills ----------------------------------------------------------------------------

    def stop_component(self, name: str) -> None:
        """Stop one restartable component (FerretDB), e.g. to drill an outage."""
        state = self._require(name)
        stop_pid(state.pids[name], name)

    def start_component(self, name: str, timeout: float = 30.0) -> None:
        """Start a stopped component again, on the same port, with the same data."""
        state = self._require(name)
        self._start(state, name, state.argv[name])
        self._wait(state, name, lambda: _tcp_open(state.mongo_port), timeout)

    def _require(self, name: str) -> State:
        state = self.state()
        if state is None or name not in (state.argv or {}):
            raise ClusterError(f"{name} cannot be stopped or started: the cluster is not running, or only "
                               f"{', '.join(RESTARTABLE)} can be")
        return state

    # ---- down ----------------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> list[str]:
        """Stop every process this cluster started (pods first), by PID; remove its data."""
        state = self.state()
        stopped: list[str] = []
        if state is not None:
            expect = {"node": "devcluster.node", "operator": "gentask operator", "api": "gentask api",
                      "apiserver": "kube-apiserver", "controller-manager": "kube-controller-manager",
                      "scheduler": "kube-scheduler", "etcd": "etcd", "ferretdb": "ferretdb",
                      "postgres": f"-D {self.root / 'postgres'}"}
            expect |= {"kube-proxy": "kube-proxy", "kubelet": "kubelet", "containerd": "containerd",  # real node
                       "forwarder": "devcluster.netns forward", "netns": "devcluster.netns hold"}
            for name in STOP_ORDER:
                pid = state.pids.get(name)
                if pid and stop_pid(pid, expect[name]):
                    stopped.append(name)
        stopped += self._stop_pod_processes()
        from devcluster.realnode import clean_up  # a real node's containers, cgroups and files; else nothing
        stopped += clean_up(self.root)
        self._clean_data()
        for name in ("state.json", "env", "kubeconfig"):
            (self.root / name).unlink(missing_ok=True)
        if not quiet:
            self.log(f"devcluster down: stopped {', '.join(stopped) or 'nothing (was not running)'}")
        return stopped

    def _clean_data(self, logs_too: bool = False) -> None:
        """Data goes at down; logs (components' and pods') stay until the next up."""
        import shutil
        for sub in ("etcd", "ferretdb", "postgres", "pki") + (("logs", "node") if logs_too else ()):
            shutil.rmtree(self.root / sub, ignore_errors=True)

    def _stop_pod_processes(self) -> list[str]:
        """Pod processes left behind by a node that was killed before it could stop them."""
        stopped = []
        for pid_file in (self.root / "node" / "pods").glob("*/*.pid"):
            try:
                pid = int(pid_file.read_text())
            except ValueError:
                continue
            if pid_alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                    stopped.append(f"pod process {pid}")
                except ProcessLookupError:
                    pass
        return stopped


def _tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def with_checkout(env: dict[str, str]) -> dict[str, str]:
    """The environment with this checkout first on PYTHONPATH: `devcluster` is imported from here, not installed."""
    paths = [str(CHECKOUT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(CHECKOUT)]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}
