"""Fixtures of the chart's end-to-end suite.

`cluster` and `namespace` are the integration suite's session fixtures (one local cluster and
FerretDB per run, or the cluster that GENTASK_TEST_KUBECONFIG/GENTASK_TEST_MONGO_URL name, e.g.
the kind cluster of `make kind-e2e`). `release` installs the chart once per module with
`helm install --wait` and uninstalls it afterwards.

Modes: on the local cluster the process node runs the chart's pods as local processes (the image
maps to this virtualenv's `gentask` command); with GENTASK_E2E_KIND=1 (hack/kind-e2e.sh) the
chart runs the image given in GENTASK_E2E_IMAGE and the API is reached by `kubectl port-forward`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster import tools_dir
from tests.integration import conftest as integration
from tests.integration.conftest import ROOT, Cluster, wait_for
from tests.support.helm import CHART, CRD_NAME, helm

PRIORITY_CLASSES = ("gentask-critical", "gentask-default", "gentask-low")
BOOTSTRAP_PRIORITIES = {"gentask-critical": 1000, "gentask-default": 100, "gentask-low": 10}
KIND = os.environ.get("GENTASK_E2E_KIND") == "1"
# What the chart runs: any image whose name contains "gentask" maps to this virtualenv on the
# process node; on kind, the image hack/kind-e2e.sh built and loaded.
IMAGE = os.environ.get("GENTASK_E2E_IMAGE", "ghcr.io/gentask/gentask:0.1.0")

# The integration suite's session fixtures, bound here so that pytest offers them to this suite
# (its conftest applies to tests/integration only); an import of the names would be shadowed by
# every fixture parameter of the same name (F811).
cluster = integration.cluster
namespace = integration.namespace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """In a run with tests/integration (`make test`), run this suite before it.

    tests/integration/operator starts a session-wide operator that watches every namespace and
    lives until the session ends. Running after it, the chart's tasks would be served by two
    operators, and a broken chart operator (e.g. missing RBAC) would go unnoticed because the
    test operator, with admin rights, did the work. Before it, the chart's operator is alone.
    """
    mine = [item for item in items if item.nodeid.startswith("tests/e2e/")]
    first_integration = next((n for n, item in enumerate(items) if item.nodeid.startswith("tests/integration/")), None)
    if not mine or first_integration is None:
        return
    rest = [item for item in items if not item.nodeid.startswith("tests/e2e/")]
    items[:] = rest[:first_integration] + mine + rest[first_integration:]


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
    _forwards: dict = field(default_factory=dict, repr=False)

    @property
    def api_service(self) -> str:
        return f"{self.name}-gentask-api"

    def api_url(self) -> str:
        return self.service_url(self.api_service, "http")

    def service_url(self, service: str, port_name: str) -> str:
        """Where a Service of the release answers: on the local cluster the ready endpoint that
        kube-proxy would route to (see service_endpoint); on kind a `kubectl port-forward`."""
        if KIND:
            return self._port_forward(service, port_name)
        host, port = service_endpoint(self.cluster, self.namespace, service, port_name)
        return f"http://{host}:{port}"

    def _port_forward(self, service: str, port_name: str) -> str:
        proc, local = self._forwards.get((service, port_name), (None, 0))
        if proc is None or proc.poll() is not None:
            svc = client.CoreV1Api(self.cluster.api).read_namespaced_service(service, self.namespace)
            remote = next(p.port for p in svc.spec.ports if p.name == port_name)
            local = free_port()
            env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
            proc = subprocess.Popen([str(tools_dir() / "bin" / "kubectl"), "-n", self.namespace, "port-forward",
                                     f"svc/{service}", f"{local}:{remote}"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            self._forwards[(service, port_name)] = (proc, local)
            wait_for(lambda: _port_open(local), 30, what=f"kubectl port-forward svc/{service}")
        return f"http://127.0.0.1:{local}"

    def close(self) -> None:
        for proc, _ in self._forwards.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


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


def service_endpoint(cluster: Cluster, namespace: str, service: str, port_name: str) -> tuple[str, int]:
    """A ready backend (address, port) of a Service, as kube-proxy would pick one.

    kube-proxy routes a Service to the ready endpoints its EndpointSlices list. The process node
    gives every pod the IP 127.0.0.1 (its pods share the host's network), and the API server
    refuses loopback addresses in EndpointSlices ("may not be in the loopback range"), so there
    the EndpointSlice controller cannot publish them. Then this resolves the Service as that
    controller does: the Service's selector picks the Ready pods, its targetPort names the port.
    """
    discovery = client.DiscoveryV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    svc = core.read_namespaced_service(service, namespace)
    svc_port = next(p for p in svc.spec.ports if p.name == port_name)
    slices = discovery.list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}").items
    for slc in slices:
        port = next((p.port for p in slc.ports or [] if p.name == port_name), None)
        for ep in slc.endpoints or []:
            if port and ep.addresses and (ep.conditions is None or ep.conditions.ready is not False):
                return ep.addresses[0], port
    selector = ",".join(f"{k}={v}" for k, v in (svc.spec.selector or {}).items())
    assert selector, f"Service {namespace}/{service} has no selector"
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if not ready or not pod.status.pod_ip or pod.metadata.deletion_timestamp:
            continue
        target = svc_port.target_port
        if isinstance(target, int) or str(target).isdigit():
            return pod.status.pod_ip, int(target)
        for container in pod.spec.containers:
            for cport in container.ports or []:
                if cport.name == target:
                    return pod.status.pod_ip, cport.container_port
    raise AssertionError(f"Service {namespace}/{service} has no ready endpoint for port {port_name}")


def adopt_for_helm(cluster: Cluster, release: str, namespace: str) -> None:
    """Let the release take over the CRD and PriorityClasses that the session fixtures applied.

    The test cluster already has them (tests/integration/conftest.py applies them for every
    suite); Helm adopts an existing object only when it carries the release's ownership metadata.
    """
    objects = [("crd", CRD_NAME)] + [("priorityclass", name) for name in PRIORITY_CLASSES]
    for kind, name in objects:
        cluster.kubectl("label", "--overwrite", kind, name, "app.kubernetes.io/managed-by=Helm", check=True)
        cluster.kubectl("annotate", "--overwrite", kind, name, f"meta.helm.sh/release-name={release}",
                        f"meta.helm.sh/release-namespace={namespace}", check=True)


def restore_bootstrap(cluster: Cluster) -> None:
    """Put back what the session fixtures made, for the suites that run after this one: the CRD
    as crds/ has it (a replace drops Helm's ownership metadata) and the three PriorityClasses."""
    ext = client.ApiextensionsV1Api(cluster.api)
    crd = yaml.safe_load((ROOT / "crds" / f"{CRD_NAME}.yaml").read_text())
    try:
        crd["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(CRD_NAME).metadata.resource_version
        ext.replace_custom_resource_definition(CRD_NAME, crd)
    except ApiException as exc:
        if exc.status != 404:
            raise
        crd["metadata"].pop("resourceVersion", None)
        ext.create_custom_resource_definition(crd)
    sched = client.SchedulingV1Api(cluster.api)
    for name, value in BOOTSTRAP_PRIORITIES.items():
        try:
            sched.create_priority_class({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                         "metadata": {"name": name}, "value": value, "preemptionPolicy": "Never",
                                         "description": f"gentask tasks of priority {name.split('-', 1)[1]}"})
        except ApiException as exc:
            if exc.status != 409:
                raise


def create_namespace(cluster: Cluster, name: str, labels: dict | None = None) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespace({"metadata": {"name": name, "labels": {"gentask.io/test": "true", **(labels or {})}}})
    wait_for(lambda: _has_default_sa(core, name), 30, what=f"namespace {name}'s default service account")


def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except ApiException:
        return False


def create_secret(cluster: Cluster, namespace: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(cluster.api).create_namespaced_secret(namespace, {
        "metadata": {"name": name, "labels": {"gentask.io/test": "true"}}, "type": "Opaque", "stringData": data})


def install_values(task_namespace: str, api_keys_secret: str) -> dict:
    """The test's values: free host ports (pods share the host network here), the fake provider."""
    repository, _, tag = IMAGE.rpartition(":") if ":" in IMAGE.rsplit("/", 1)[-1] else (IMAGE, "", "")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent" if not KIND else "Never"},
        "taskNamespace": {"name": task_namespace, "create": True},
        "credentials": {"secretName": "gentask-credentials"},
        "config": {"environment": "production", "logLevel": "info", "providers": ["fake"]},
        "operator": {"metricsPort": 9090 if KIND else free_port(), "resyncSeconds": 5},
        "api": {"port": 8080 if KIND else free_port(), "replicas": 1,
                "auth": {"disabled": False, "existingSecret": api_keys_secret, "secretKey": "GENTASK_API_KEYS"},
                "service": {"type": "ClusterIP", "port": 80}},
    }


@pytest.fixture(scope="module")
def release(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory):
    """The chart installed with `helm install --wait`: operator and API Ready, task namespace made."""
    suffix = uuid.uuid4().hex[:6]
    name, ns, task_ns = f"e2e{suffix}", f"gentask-e2e-{suffix}", f"gentask-e2e-{suffix}-tasks"
    mongo_url = cluster.mongo_url          # what the pods connect to: FerretDB here, the MongoDB in kind
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
    rel = Release(name, ns, task_ns, cluster, api_key, values)
    started = time.monotonic()
    try:
        installed = helm("install", name, str(CHART), "--namespace", ns, "-f", str(values_file), "--wait",
                         "--timeout", "180s", kubeconfig=cluster.kubeconfig, timeout=240)
        rel.notes = installed.stdout
        rel.install_seconds = time.monotonic() - started
        # `--wait` waited for the Deployments' Ready pods. The process node reports a pod Ready
        # once its process runs (it runs no probes), so poll /readyz the way the readinessProbe
        # would; on kind the probes made --wait cover this already.
        for service, port_name in ((rel.api_service, "http"), (f"{name}-gentask-operator-metrics", "metrics")):
            def readyz(service: str = service, port_name: str = port_name) -> bool:
                return _ready(rel.service_url(service, port_name) + "/readyz")
            wait_for(readyz, 60, interval=0.3, what=f"{service} /readyz to answer 200")
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
        restore_bootstrap(cluster)


def helm_manifest(rel: Release) -> list[dict]:
    out = helm("get", "manifest", rel.name, "--namespace", rel.namespace, kubeconfig=rel.cluster.kubeconfig).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]
