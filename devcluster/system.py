"""gentask itself on the local cluster: what the chart installs, for `make run` and the tests.

`bootstrap` applies the CRD and the PriorityClasses; `start_system` also makes the task
namespace with its credentials Secret and starts the operator and the REST API as processes of
this machine (their PIDs join the cluster's, so `down` stops them too).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster.cluster import ClusterError, DevCluster, State

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "generationtasks.gentask.io.yaml"
QUOTA_CRD = ROOT / "crds" / "generationquotas.gentask.io.yaml"
WORKER_POLICY = ROOT / "crds" / "gentask-worker-policy.yaml"
PRIORITY_CLASSES = {"gentask-critical": 1000, "gentask-default": 100, "gentask-low": 10}
TASK_NAMESPACE = "gentask-tasks"
TENANT_LABEL = "gentask.io/tenant=enabled"
DEV_API_KEY = "dev-key-change-me"
VENDOR_KEYS = ("ARK_API_KEY", "VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY", "OPENAI_API_KEY")


def apply_worker_policy(api: client.ApiClient) -> None:
    """The ValidatingAdmissionPolicy (and its binding) that keeps each worker to its own task."""
    adm = client.AdmissionregistrationV1Api(api)
    verbs = {"ValidatingAdmissionPolicy": (adm.create_validating_admission_policy,
                                           adm.read_validating_admission_policy,
                                           adm.replace_validating_admission_policy),
             "ValidatingAdmissionPolicyBinding": (adm.create_validating_admission_policy_binding,
                                                  adm.read_validating_admission_policy_binding,
                                                  adm.replace_validating_admission_policy_binding)}
    for doc in yaml.safe_load_all(WORKER_POLICY.read_text()):
        create, read, replace = verbs[doc["kind"]]
        try:
            create(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            doc["metadata"]["resourceVersion"] = read(doc["metadata"]["name"]).metadata.resource_version
            replace(doc["metadata"]["name"], doc)


def bootstrap(api: client.ApiClient, timeout: float = 30.0) -> None:
    """The CRD (created or replaced), the worker admission policy and the PriorityClasses
    gentask-{critical,default,low}."""
    ext = client.ApiextensionsV1Api(api)
    for path in (QUOTA_CRD, CRD):
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            crd["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(name).metadata.resource_version
            ext.replace_custom_resource_definition(name, crd)
    apply_worker_policy(api)
    sched = client.SchedulingV1Api(api)
    for pc, value in PRIORITY_CLASSES.items():
        body = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": pc},
                "value": value, "preemptionPolicy": "Never",
                "description": f"gentask tasks of priority {pc.split('-', 1)[1]}"}
        try:
            sched.create_priority_class(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = ext.read_custom_resource_definition(name)
        if any(c.type == "Established" and c.status == "True" for c in got.status.conditions or []):
            return
        time.sleep(0.1)
    raise ClusterError("the GenerationTask CRD did not become Established")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, pid: int, name: str, cluster: DevCluster, timeout: float = 60.0) -> None:
    from devcluster.cluster import pid_alive
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise ClusterError(f"{name} exited during start-up:\n{cluster._tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise ClusterError(f"{name} did not become ready within {timeout:.0f}s:\n{cluster._tail(name)}")


def start_system(cluster: DevCluster, state: State, api_port: int = 8080) -> dict[str, str]:
    """Task namespace, credentials Secret, operator and API processes. Returns what it started."""
    from kubernetes import config
    api = config.new_client_from_config(str(state.kubeconfig))
    bootstrap(api)
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": TASK_NAMESPACE}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    from devcluster.realnode import pod_mongo_url, runs_real_node
    mongo_url = pod_mongo_url(state) if runs_real_node(cluster.root) else state.mongo_url  # as the pods reach it
    secret = {"MONGO_URL": mongo_url, **{k: os.environ[k] for k in VENDOR_KEYS if os.environ.get(k)}}
    body = {"metadata": {"name": "gentask-credentials"}, "stringData": secret}
    try:
        core.create_namespaced_secret(TASK_NAMESPACE, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        core.replace_namespaced_secret("gentask-credentials", TASK_NAMESPACE, body)
    api.close()
    metrics_port = _free_port()
    env = {**os.environ, "KUBECONFIG": str(state.kubeconfig), "MONGO_URL": state.mongo_url,
           # namespaces as tenants (docs/tenants.md): the operator watches every namespace and serves
           # the task namespace and those labelled TENANT_LABEL; a task anywhere else gets a status saying so
           "GENTASK_NAMESPACE": TASK_NAMESPACE, "GENTASK_WATCH_NAMESPACES": "",
           "GENTASK_TENANT_NAMESPACES": TASK_NAMESPACE, "GENTASK_TENANT_LABEL": TENANT_LABEL,
           "GENTASK_WORKER_IMAGE": "gentask:dev", "GENTASK_METRICS_PORT": str(metrics_port),
           "PORT": str(api_port), "GENTASK_API_KEYS": os.environ.get("GENTASK_API_KEYS", f"{DEV_API_KEY}:demo:admin")}
    cluster._start(state, "operator", [sys.executable, "-m", "gentask", "operator"], env=env)
    cluster._start(state, "api", [sys.executable, "-m", "gentask", "api"], env=env)
    _wait_http(f"http://127.0.0.1:{metrics_port}/readyz", state.pids["operator"], "operator", cluster)
    _wait_http(f"http://127.0.0.1:{api_port}/healthz", state.pids["api"], "api", cluster)
    return {"api": f"http://127.0.0.1:{api_port}", "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
            "namespace": TASK_NAMESPACE, "tenant_label": TENANT_LABEL, "pod_mongo_url": mongo_url,
            "api_key": env["GENTASK_API_KEYS"].split(":", 1)[0]}
