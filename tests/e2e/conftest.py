"""Fixtures of the chart's end-to-end suite.

`cluster` is this suite's own: a local cluster on the **real node** (kubelet, kube-proxy and
containerd with runc; devcluster.realnode), in a folder of its own (GENTASK_E2E_DEVCLUSTER_ROOT,
else GENTASK_DEVCLUSTER_ROOT + "-real", else .devcluster-real), reused when it runs, else started
here and brought down when the suite ends. Before it is handed out, the image is built with
hack/build-image.sh (cached: seconds when nothing changed) and imported into the node, so the
chart's pods are real containers of the image that `make image` makes: the kubelet runs their
probes and applies their securityContext, kube-proxy their Services. Pods reach FerretDB at
`pod_mongo_url` (the node's address), so that is the MONGO_URL of the release's Secrets; the
cluster has no DNS, and the chart needs none (in-cluster clients use the Service IP of
`kubernetes`). Host-side, every Service is reached through `kubectl port-forward`.

With GENTASK_TEST_KUBECONFIG and GENTASK_TEST_MONGO_URL set (e.g. the kind cluster of `make
kind-e2e`, with GENTASK_E2E_KIND=1), the suite uses that cluster and the image GENTASK_E2E_IMAGE
loaded there, and builds and starts nothing.

`namespace` is the integration suite's (a fresh namespace a test); `release` installs the chart
once per module with `helm install --wait` and uninstalls it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from devcluster import DevCluster, tools_dir
from devcluster.cluster import ClusterError
from devcluster.realnode import (
    cgroup_hierarchies,
    cgroup_name,
    has_image,
    import_images,
    normalized,
    pod_mongo_url,
    runs_real_node,
)
from tests.integration import conftest as integration
from tests.integration.conftest import ROOT, Cluster, has_default_account
from tests.support.helm import CHART, CRD_NAME, helm
from tests.support.waits import describe_namespace, describe_pods, describe_task, wait_for

PRIORITY_CLASSES = ("gentask-critical", "gentask-default", "gentask-low")
KIND = os.environ.get("GENTASK_E2E_KIND") == "1"
# a cluster of someone else's (kind): used as it is, nothing built, started or imported
EXTERNAL = bool(os.environ.get("GENTASK_TEST_KUBECONFIG") and os.environ.get("GENTASK_TEST_MONGO_URL"))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What the chart runs: the image hack/build-image.sh builds (its default name), or on kind the one
# hack/kind-e2e.sh built and loaded.
IMAGE = os.environ.get("GENTASK_E2E_IMAGE", f"ghcr.io/gentask/gentask:{VERSION}")
BUILD_SCRIPT = ROOT / "hack" / "build-image.sh"
# The first test of the suite builds the image and starts the cluster: a cold build (the Debian
# base made with mmdebstrap, the dependencies downloaded) takes minutes, so that test gets this
# budget instead of the project's per-test timeout (see pytest_collection_finish).
SETUP_TIMEOUT = 1800

# The integration suite's fixture of a fresh namespace, bound here so that pytest offers it to this
# suite (its conftest applies to tests/integration only); it asks for `cluster`, which is this
# suite's below. An import of the name would be shadowed by every fixture parameter of the same
# name (F811).
namespace = integration.namespace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """In a run with tests/integration (`make test`), run this suite before it.

    This suite's real-node cluster lives for the suite only (`cluster` is package-scoped), the
    integration suite's process-node cluster until the session ends: run first, this suite has
    the machine to itself, and its cluster is down before the other one starts. (On a cluster
    both suites share, GENTASK_TEST_KUBECONFIG, it also keeps the chart's operator alone:
    tests/integration/operator starts a session-wide operator, with admin rights, that would
    otherwise serve the chart's tasks too and hide a broken chart operator.)
    """
    mine = [item for item in items if item.nodeid.startswith("tests/e2e/")]
    first_integration = next((n for n, item in enumerate(items) if item.nodeid.startswith("tests/integration/")), None)
    if not mine or first_integration is None:
        return
    rest = [item for item in items if not item.nodeid.startswith("tests/e2e/")]
    items[:] = rest[:first_integration] + mine + rest[first_integration:]


def pytest_collection_finish(session: pytest.Session) -> None:
    """The suite's first test that asks for `cluster` sets it up (image build, cluster start, image
    import): it gets SETUP_TIMEOUT instead of the per-test timeout of pyproject.toml."""
    if EXTERNAL:
        return
    here = Path(__file__).parent
    for item in session.items:
        if Path(item.path).is_relative_to(here) and "cluster" in getattr(item, "fixturenames", ()):
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(SETUP_TIMEOUT))
            return


# --- the cluster: the real node, the built image ---------------------------------------------------

class E2ECluster(Cluster):
    """The suite's cluster. `mongo_url` is the MongoDB URL as the pods reach it (on the real node
    FerretDB at the node's address); pod logs are the kubelet's, read with `kubectl logs`."""

    def pod_log(self, namespace: str, pod: str, container: str = "main") -> str:
        proc = self.kubectl("logs", "-n", namespace, pod, "-c", container, "--request-timeout=10s")
        return proc.stdout if proc.returncode == 0 else f"(kubectl logs: {proc.stderr.strip()[:300]})"


def e2e_root() -> Path:
    """The folder of the suite's real-node cluster, never the one of the integration suite's."""
    if os.environ.get("GENTASK_E2E_DEVCLUSTER_ROOT"):
        return Path(os.environ["GENTASK_E2E_DEVCLUSTER_ROOT"]).resolve()
    base = os.environ.get("GENTASK_DEVCLUSTER_ROOT")
    return Path(base.rstrip("/") + "-real").resolve() if base else ROOT / ".devcluster-real"


def _say(config: pytest.Config) -> Callable[[str], None]:
    """Print progress to the terminal now, past pytest's capture (a cold build takes minutes)."""
    capman = config.pluginmanager.getplugin("capturemanager")
    first = [True]

    def say(text: str) -> None:
        line = ("\n" if first[0] else "") + text
        first[0] = False
        if capman is None:
            print(line, flush=True)
            return
        with capman.global_and_fixture_disabled():
            print(line, flush=True)
    return say


def build_image(say: Callable[[str], None]) -> tuple[Path, str]:
    """`hack/build-image.sh` for IMAGE: the docker-archive it wrote and the image's id. Its progress
    lines go to the terminal as they come; when it cannot build, the test fails (never skips) with
    the script's last lines."""
    started = time.monotonic()
    say(f"[e2e] building {IMAGE} with hack/build-image.sh (cached: seconds when nothing changed)")
    env = {**os.environ, "IMAGE": IMAGE}
    tail: list[str] = []
    proc = subprocess.Popen(["bash", str(BUILD_SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-59:], line]
            if line.startswith(("[image]", "[packages]")):
                say(f"  {line}")
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted (a timeout, Ctrl-C): the build goes too
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    archive = Path(tail[-1]) if tail else Path()
    if rc != 0 or not archive.is_file():
        pytest.fail(f"hack/build-image.sh could not build {IMAGE} (exit {rc}); the chart's e2e suite needs the "
                    "image. Its last lines:\n" + "\n".join(tail[-40:]), pytrace=False)
    image_id, _, name = Path(f"{archive}.id").read_text().strip().partition(" ")
    assert name == IMAGE, f"{archive}.id names {name!r}, not {IMAGE}"
    say(f"[e2e] image {IMAGE} ({image_id[:12]}) ready in {time.monotonic() - started:.0f}s: {archive}")
    return archive, image_id


def load_image(root: Path, archive: Path, image_id: str, say: Callable[[str], None]) -> None:
    """The image into the node's containerd, unless it holds that image under that name already."""
    if has_image(root, IMAGE, image_id):
        say(f"[e2e] the node holds {IMAGE} ({image_id[:12]}) already")
        return
    started = time.monotonic()
    names = import_images(root, [archive])
    assert normalized(IMAGE) in names, f"importing {archive} gave {names}, not {IMAGE}"
    say(f"[e2e] imported {IMAGE} into the node in {time.monotonic() - started:.0f}s")


def node_leftovers(root: Path) -> list[str]:
    """What a real-node cluster in root left on the host: processes (by command line or working
    folder), mounts, cgroups, the node's files."""
    left = [str(h / cgroup_name(root)) for h in cgroup_hierarchies() if (h / cgroup_name(root)).exists()]
    left += [str(root / "realnode")] if (root / "realnode").exists() else []
    left += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
             if str(root) in line]
    inside = str(root) + "/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (proc / "stat").read_text().rsplit(") ", 1)[1].startswith("Z"):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except (OSError, IndexError):
            continue
        if inside in cmdline or cwd == str(root) or cwd.startswith(inside):
            left.append(f"process {proc.name}: {cmdline[:160]}")
    return left


def _interrupt_on_sigterm() -> Callable | int | None:
    """Take SIGTERM (a cancelled CI job, `timeout`) as Ctrl-C: pytest then still runs the
    teardowns, and the cluster goes down. Returns the handler it replaced."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave it be
        return None


@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest):
    """The suite's cluster: the real node with the built image (see the module's docstring); on
    GENTASK_TEST_KUBECONFIG/GENTASK_TEST_MONGO_URL, that cluster as it is."""
    if EXTERNAL:
        kubeconfig = Path(os.environ["GENTASK_TEST_KUBECONFIG"])
        api = config.new_client_from_config(str(kubeconfig))
        try:
            yield E2ECluster(kubeconfig, os.environ["GENTASK_TEST_MONGO_URL"], api)
        finally:
            api.close()
        return
    say = _say(request.config)
    root = e2e_root()
    begun = time.monotonic()
    archive, image_id = build_image(say)
    built = time.monotonic()
    dev = DevCluster(root, node="real", log=lambda text: say(f"[e2e] {text}"))
    started: DevCluster | None = None
    previous = _interrupt_on_sigterm()
    try:
        state = dev.running()
        if state is not None and not runs_real_node(root):
            pytest.fail(f"a cluster runs in {root}, but not on the real node: bring it down "
                        f"(python -m devcluster --root {root} down) or set GENTASK_E2E_DEVCLUSTER_ROOT", pytrace=False)
        if state is None:
            say(f"[e2e] starting a real-node cluster in {root}")
            try:
                state = dev.up(timeout=180)
            except ClusterError as exc:
                pytest.fail(f"the chart's e2e suite needs the real node, which cannot start in {root}:\n{exc}",
                            pytrace=False)
            started = dev
        else:
            say(f"[e2e] reusing the real-node cluster running in {root}")
        up = time.monotonic()
        load_image(root, archive, image_id, say)
        say(f"[e2e] set up in {time.monotonic() - begun:.0f}s (image {built - begun:.0f}s, cluster "
            f"{up - built:.0f}s, import {time.monotonic() - up:.0f}s)")
        api = config.new_client_from_config(str(state.kubeconfig))
        try:
            yield E2ECluster(state.kubeconfig, pod_mongo_url(state), api)
        finally:
            api.close()
    finally:
        try:
            if started is not None:
                started.down()
                left = node_leftovers(root)
                assert not left, f"down of the e2e cluster in {root} left {left}"
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


# --- the installed release ------------------------------------------------------------------------

@dataclass
class Release:
    name: str
    namespace: str            # the release namespace: operator and API
    task_namespace: str
    cluster: Cluster
    api_key: str
    values: dict
    install_seconds: float = 0.0      # helm install --wait
    ready_seconds: float = 0.0        # ... until both /readyz answer 200
    notes: str = ""
    workdir: Path | None = None       # the module's temporary folder: values, port-forward logs
    _forwards: dict = field(default_factory=dict, repr=False)

    @property
    def api_service(self) -> str:
        return f"{self.name}-gentask-api"

    def api_url(self) -> str:
        return self.service_url(self.api_service, "http")

    def service_url(self, service: str, port_name: str) -> str:
        """Where a Service of the release answers from this host (which cannot reach ClusterIPs or
        pod IPs): a `kubectl port-forward` to the pod the Service routes to (see service_backend).
        The forward follows the Service: once that pod is gone or not ready (a rollout), the next
        call forwards to the one that serves now. So ask again for every request; keep no URL."""
        target = service_backend(self.cluster, self.namespace, service, port_name)
        proc, local, forwarded = self._forwards.get((service, port_name), (None, 0, None))
        if proc is not None and proc.poll() is None and forwarded == target:
            return f"http://127.0.0.1:{local}"
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        pod, port = target
        local = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        log = self._forward_log(service, port_name)
        with log.open("ab") as out:
            proc = subprocess.Popen([str(tools_dir() / "bin" / "kubectl"), "-n", self.namespace, "port-forward",
                                     f"pod/{pod}", f"{local}:{port}"], env=env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._forwards[(service, port_name)] = (proc, local, target)
        wait_for(lambda: (_port_open(local), proc.poll()), 30, until=lambda v: v[0],
                 abort=lambda v: v[1] is not None and f"kubectl port-forward exited {v[1]}: "
                                                      f"{log.read_text(errors='replace')[-500:]}",
                 what=f"kubectl port-forward pod/{pod} (Service {service})",
                 describe=lambda: describe_pods(self.cluster, self.namespace))
        return f"http://127.0.0.1:{local}"

    def _forward_log(self, service: str, port_name: str) -> Path:
        folder = self.workdir or Path(os.environ.get("TMPDIR", "/tmp"))
        return folder / f"port-forward-{self.name}-{service}-{port_name}.log"

    def readyz(self, service: str, port_name: str) -> bool:
        """Whether /readyz of the Service answers 200 (False while it has no ready pod)."""
        try:
            return _ready(self.service_url(service, port_name) + "/readyz")
        except AssertionError:
            return False

    def describe(self, task: str | None = None) -> str:
        """For a failed wait: the task (or the task namespace), and the release's operator and API pods
        with their last log lines."""
        about = (describe_task(self.cluster, self.task_namespace, task) if task
                 else describe_namespace(self.cluster, self.task_namespace))
        return about + "\n" + describe_pods(self.cluster, self.namespace)

    def close(self) -> None:
        for proc, _, _ in self._forwards.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self._forwards.clear()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (OSError, AssertionError):
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def service_backend(cluster: Cluster, namespace: str, service: str, port_name: str) -> tuple[str, int]:
    """The pod (its name) and port that a Service routes to, as kube-proxy reads them: a ready,
    not terminating endpoint of the Service's EndpointSlices."""
    slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    for slc in slices:
        port = next((p.port for p in slc.ports or [] if p.name == port_name), None)
        for ep in slc.endpoints or []:
            cond = ep.conditions
            ready = cond is None or (cond.ready is not False and not cond.terminating)
            if port and ready and ep.target_ref is not None and ep.target_ref.kind == "Pod":
                return ep.target_ref.name, port
    raise AssertionError(f"Service {namespace}/{service} has no ready endpoint for port {port_name}")


WORKER_POLICY = "gentask-worker-own-task"


def adopt_for_helm(cluster: Cluster, release: str, namespace: str) -> None:
    """Let the release take over the cluster-wide objects it makes that exist already: the CRD an
    earlier release left (crds.keep) in a reused cluster, or on a cluster shared with the
    integration suite (GENTASK_TEST_KUBECONFIG) the CRD, PriorityClasses and worker policy that
    suite applies. Helm adopts an existing object only when it carries the release's ownership
    metadata."""
    objects = [("crd", CRD_NAME)] + [("priorityclass", name) for name in PRIORITY_CLASSES] + [
        ("validatingadmissionpolicy", WORKER_POLICY), ("validatingadmissionpolicybinding", WORKER_POLICY)]
    for kind, name in objects:
        if cluster.kubectl("get", kind, name, "-o", "name").returncode != 0:
            continue  # not there: the release makes it
        cluster.kubectl("label", "--overwrite", kind, name, "app.kubernetes.io/managed-by=Helm", check=True)
        cluster.kubectl("annotate", "--overwrite", kind, name, f"meta.helm.sh/release-name={release}",
                        f"meta.helm.sh/release-namespace={namespace}", check=True)


def create_namespace(cluster: Cluster, name: str, labels: dict | None = None) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": name, "labels": {"gentask.io/test": "true", **(labels or {})}}})
    wait_for(lambda: has_default_account(core, name), 60, interval=0.1,
             what=f"namespace {name}'s default service account")


def create_secret(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(cluster.api).create_namespaced_secret(namespace, {
        "metadata": {"name": name, "labels": {"gentask.io/test": "true"}}, "type": "Opaque", "stringData": data})


def install_values(task_namespace: str, api_keys_secret: str) -> dict:
    """The test's values: the built image, never pulled (no registry: it was imported into the
    node, or loaded into kind), the fake provider, the chart's default ports (every pod has its
    own network)."""
    repository, _, tag = IMAGE.rpartition(":") if ":" in IMAGE.rsplit("/", 1)[-1] else (IMAGE, "", "")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "taskNamespace": {"name": task_namespace, "create": True},
        "credentials": {"secretName": "gentask-credentials"},
        "config": {"environment": "production", "logLevel": "info", "providers": ["fake"]},
        "operator": {"metricsPort": 9090, "resyncSeconds": 5},
        "api": {"port": 8080, "replicas": 1,
                "auth": {"disabled": False, "existingSecret": api_keys_secret, "secretKey": "GENTASK_API_KEYS"},
                "service": {"type": "ClusterIP", "port": 80}},
    }


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    """The chart installed with `helm install --wait`: operator and API Ready, task namespace made."""
    suffix = uuid.uuid4().hex[:6]
    name, ns, task_ns = f"e2e{suffix}", f"gentask-e2e-{suffix}", f"gentask-e2e-{suffix}-tasks"
    mongo_url = cluster.mongo_url   # as the pods reach it: FerretDB at the real node's address, the MongoDB in kind
    api_key = f"e2e-{uuid.uuid4().hex}"
    values = install_values(task_ns, "gentask-api-keys")
    values_file = tmp_path_factory.mktemp("helm") / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))

    # The release namespace enforces Pod Security "restricted" too: the operator and API pods
    # are admitted only if the chart's pods comply.
    create_namespace(cluster, ns, {"pod-security.kubernetes.io/enforce": "restricted"})
    create_secret(cluster, ns, "gentask-credentials", {"MONGO_URL": mongo_url})
    create_secret(cluster, ns, "gentask-api-keys", {"GENTASK_API_KEYS": f"{api_key}:e2e-user"})
    adopt_for_helm(cluster, name, ns)
    rel = Release(name, ns, task_ns, cluster, api_key, values, workdir=values_file.parent)
    started = time.monotonic()
    try:
        installed = helm("install", name, str(CHART), "--namespace", ns, "-f", str(values_file), "--wait",
                         "--timeout", "180s", kubeconfig=cluster.kubeconfig, timeout=240)
        rel.notes = installed.stdout
        rel.install_seconds = time.monotonic() - started
        # `--wait` waited for the Deployments' Ready pods: Ready by the kubelet's readiness probes
        # (GET /readyz). From this host, through the Services, /readyz answers 200 too.
        for service, port_name in ((rel.api_service, "http"), (f"{name}-gentask-operator-metrics", "metrics")):
            wait_for(lambda service=service, port_name=port_name: rel.readyz(service, port_name), 60, interval=0.3,
                     what=f"{service} /readyz to answer 200", describe=lambda: describe_pods(cluster, ns))
        rel.ready_seconds = time.monotonic() - started
        # The worker pods read the same Secret in the task namespace, which the chart created.
        create_secret(cluster, task_ns, "gentask-credentials", {"MONGO_URL": mongo_url})
        yield rel
    finally:
        rel.close()
        helm("uninstall", name, "--namespace", ns, "--wait", "--timeout", "120s", kubeconfig=cluster.kubeconfig,
             check=False)
        core = client.CoreV1Api(cluster.api)
        for namespace_name in (ns, task_ns):
            try:
                core.delete_namespace(namespace_name, propagation_policy="Background")
            except ApiException as exc:
                if exc.status != 404:
                    raise


def helm_manifest(rel: Release) -> list[dict]:
    out = helm("get", "manifest", rel.name, "--namespace", rel.namespace, kubeconfig=rel.cluster.kubeconfig).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]
