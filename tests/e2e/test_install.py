"""The chart installed for real: `helm install --wait` into the real node (or kind), the operator
and the API running as containers of the built image and Ready by their probes, tasks of every
type over REST through the API's Service (a `kubectl port-forward`) in worker containers, Pod
Security `restricted` as the kubelet applies it (seen from inside the containers), `helm upgrade`,
and `helm uninstall` (the last test of this module)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import IMAGE, PRIORITY_CLASSES, Release, dump, helm_manifest, service_backend
from tests.integration.conftest import ROOT
from tests.support.helm import CHART, CRD_NAME, helm
from tests.support.netpol import Address, Pod, allows_egress, policy_selects
from tests.support.waits import namespace_progress, task_progress, wait_for, watching

TASKS = {   # type -> (request body, what the downloaded artifact starts with)
    "image": ({"prompt": "a red fox in the snow", "provider": "fake", "model": "fake-image", "size": "64x48"},
              "image/png"),
    "video": ({"prompt": "waves on a beach", "provider": "fake", "model": "fake-video", "duration": 1,
               "aspect_ratio": "16:9"}, "video/mp4"),
    "text": ({"prompt": "say hello", "provider": "fake", "model": "fake-text", "max_tokens": 50}, None),
}
MAGIC = {"image/png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"), "video/mp4": lambda b: b[4:8] == b"ftyp"}


def call(rel: Release, method: str, path: str, body: dict | None = None) -> tuple[int, dict | bytes, dict]:
    url = path if path.startswith("http") else rel.api_url() + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {rel.api_key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, headers = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    if headers.get("content-type", headers.get("Content-Type", "")).startswith("application/json"):
        return status, json.loads(raw), headers
    return status, raw, headers


@pytest.fixture(scope="module")
def finished(release: Release) -> dict[str, dict]:
    """One task of each type, created over REST at once and followed until each one finished."""
    created = {}
    for kind, (body, _) in TASKS.items():
        status, answer, _ = call(release, "POST", f"/api/v1/ai/{kind}/task", body)
        assert status == 200 and answer["success"], f"POST {kind}: {status} {answer}"
        created[kind] = answer["data"]["task_id"]
    done: dict[str, dict] = {}

    def statuses() -> dict[str, str]:
        """kind -> the API's status word (phase) of its task; the finished ones are kept in done."""
        seen = {}
        for kind, task_id in created.items():
            data = done.get(kind)
            if data is None:
                status, answer, _ = call(release, "GET", f"/api/v1/ai/task/result/{task_id}")
                assert status == 200, answer
                data = answer["data"]
                if data["status"] in ("completed", "failed", "cancelled"):
                    done[kind] = data
            seen[kind] = f"{data['status']} ({data.get('phase')})"
        return seen

    def unfinished() -> str:
        return "\n".join(release.describe(task_id) for kind, task_id in created.items() if kind not in done)
    wait_for(statuses, 150, interval=0.5, until=lambda _: len(done) == len(created),
             what=f"tasks {created} to finish", progress=namespace_progress(release.cluster, release.task_namespace),
             describe=unfinished)
    return done


def test_install_waits_until_operator_and_api_are_ready(release: Release):
    apps = client.AppsV1Api(release.cluster.api)
    deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment(release.namespace).items}
    assert set(deployments) == {f"{release.name}-gentask-operator", f"{release.name}-gentask-api"}
    for dep in deployments.values():
        assert dep.status.ready_replicas == dep.spec.replicas == 1, dump(dep.status.to_dict())
    # Ready by the kubelet's probes, in containers of the built image (never pulled: no registry):
    # the startup probe (/healthz) passed, the readiness probe (/readyz) says ready, no restart
    pods = client.CoreV1Api(release.cluster.api).list_namespaced_pod(
        release.namespace, label_selector=f"app.kubernetes.io/instance={release.name}").items
    assert len(pods) == 2, [p.metadata.name for p in pods]
    for pod in pods:
        container, state = pod.spec.containers[0], pod.status.container_statuses[0]
        assert container.startup_probe.http_get.path == "/healthz", container.startup_probe
        assert container.readiness_probe.http_get.path == "/readyz", container.readiness_probe
        assert container.image == IMAGE and container.image_pull_policy == "Never"
        assert state.started and state.ready and state.restart_count == 0, dump(pod.status.to_dict())
        assert state.state.running is not None and state.image_id, dump(pod.status.to_dict())
    status = json.loads(helm("status", release.name, "--namespace", release.namespace, "-o", "json",
                             kubeconfig=release.cluster.kubeconfig).stdout)
    assert status["info"]["status"] == "deployed"
    # NOTES.txt: how to reach the API; no warning, since API keys are configured
    assert f"port-forward svc/{release.name}-gentask-api" in release.notes
    assert "no API keys are configured" not in release.notes
    print(f"\nhelm install --wait: {release.install_seconds:.1f}s; both /readyz 200 after {release.ready_seconds:.1f}s")


def test_api_refuses_callers_without_a_key(release: Release):
    req = urllib.request.Request(release.api_url() + "/api/v1/ai/tasks")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 401


@pytest.mark.parametrize("kind", list(TASKS))
def test_task_over_rest_runs_to_completion_and_its_result_downloads(release: Release, finished: dict, kind: str):
    task = finished[kind]
    assert task["status"] == "completed" and task["phase"] == "Succeeded", dump(task)
    assert task["type"] == kind and task["served_by"]["provider"] == "fake"
    _, mime = TASKS[kind]
    if mime is None:    # a short text is the result itself, inline in the status
        assert task["result"]["text_result"].startswith("Simulated answer to: say hello")
    else:
        artifact = task["result"]["artifacts"][0]
        status, data, headers = call(release, "GET", artifact["url"])
        assert status == 200, data
        assert headers.get("content-type", headers.get("Content-Type", "")).startswith(mime)
        assert isinstance(data, bytes) and MAGIC[mime](data), data[:32]
        assert len(data) == artifact["size_bytes"]
    # kubectl get gt shows it, Succeeded
    proc = release.cluster.kubectl("get", "gt", "-n", release.task_namespace, task["task_id"], check=True)
    header, row = proc.stdout.splitlines()[:2]
    assert "PHASE" in header and task["task_id"] in row and "Succeeded" in row and kind in row, proc.stdout


def test_history_lists_the_tasks_from_mongodb(release: Release, finished: dict):
    status, answer, _ = call(release, "GET", "/api/v1/ai/tasks?limit=10")
    assert status == 200, answer
    listed = {t["task_id"] for t in answer["data"]["tasks"]}
    assert {t["task_id"] for t in finished.values()} <= listed


def test_task_namespace_enforces_restricted_and_admits_the_task_pods(release: Release, finished: dict):
    core, batch = client.CoreV1Api(release.cluster.api), client.BatchV1Api(release.cluster.api)
    labels = core.read_namespace(release.task_namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for task in finished.values():        # each task's Job pod was admitted and succeeded there
        def job_succeeded(task: dict = task):
            job = batch.read_namespaced_job(task["task_id"], release.task_namespace)
            return job if job.status.succeeded == 1 else None
        job = wait_for(job_succeeded, 60, what=f"Job {task['task_id']} to succeed (the pod exits after its report)",
                       **watching(release.cluster, release.task_namespace, task=task["task_id"]))
        assert job.spec.template.spec.priority_class_name == "gentask-default"
        # made by the chart's operator: the worker image is the chart's own, and its container ran it
        assert job.spec.template.spec.containers[0].image == IMAGE
        pods = core.list_namespaced_pod(release.task_namespace, label_selector=f"job-name={task['task_id']}").items
        ran = [(p.status.container_statuses or [None])[0] for p in pods]
        assert any(c is not None and c.state.terminated is not None and c.state.terminated.exit_code == 0
                   and c.image_id for c in ran), dump([p.status.to_dict() for p in pods])
    # a pod that is not restricted is refused in the task namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "not-restricted"},
           "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(release.task_namespace, pod, dry_run="All")
    assert err.value.status == 403 and "restricted" in err.value.body


# What a container of the image says about itself: its main process (pid 1) and this one (uid,
# gid, no_new_privs, capabilities, seccomp), and whether / and /tmp take a write.
SELF_REPORT = r"""
import json
seen = {}
for who in ("1", "self"):
    fields = dict(line.split(":\t", 1) for line in open(f"/proc/{who}/status").read().splitlines() if ":\t" in line)
    seen[who] = {k: fields[k].split() for k in ("Uid", "Gid", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd", "Seccomp")}
for path in ("/gentask-probe", "/tmp/gentask-probe"):
    try:
        open(path, "w").close()
        seen[path] = "written"
    except OSError as exc:
        seen[path] = exc.strerror
print("SELF-REPORT " + json.dumps(seen))
"""


def assert_restricted(report: str, where: str) -> None:
    """Pod Security `restricted` as the kubelet (runc) applied it: uid/gid 65532, no privilege
    escalation (no_new_privs), no capability at all, the runtime's seccomp filter, a read-only
    root filesystem, a writable /tmp (the emptyDir)."""
    line = next((li for li in report.splitlines() if li.startswith("SELF-REPORT ")), None)
    assert line is not None, f"{where}: no report in {report[-2000:]!r}"
    seen = json.loads(line.split(" ", 1)[1])
    for who in ("1", "self"):
        proc = seen[who]
        assert proc["Uid"] == ["65532"] * 4 and proc["Gid"] == ["65532"] * 4, (where, who, proc)
        assert proc["NoNewPrivs"] == ["1"], (where, who, proc)
        assert all(int(proc[k][0], 16) == 0 for k in ("CapEff", "CapPrm", "CapBnd")), (where, who, proc)
        assert proc["Seccomp"] == ["2"], (where, who, proc)  # 2: a filter (RuntimeDefault)
    assert seen["/gentask-probe"] == "Read-only file system", (where, seen)
    assert seen["/tmp/gentask-probe"] == "written", (where, seen)


def test_operator_and_api_containers_run_restricted(release: Release):
    """From inside the chart's containers (`kubectl exec`): what the kubelet made of their
    securityContext."""
    pods = client.CoreV1Api(release.cluster.api).list_namespaced_pod(
        release.namespace, label_selector=f"app.kubernetes.io/instance={release.name}").items
    assert {p.metadata.labels["app.kubernetes.io/component"] for p in pods} == {"operator", "api"}
    for pod in pods:
        if pod.metadata.deletion_timestamp:
            continue
        container = pod.spec.containers[0].name
        proc = release.cluster.kubectl("exec", "-n", release.namespace, pod.metadata.name, "-c", container, "--",
                                       "python", "-c", SELF_REPORT)
        assert proc.returncode == 0, proc.stderr
        assert_restricted(proc.stdout, f"{pod.metadata.name}/{container}")


def test_task_pods_run_restricted(release: Release, finished: dict):
    """A pod made from a task's Job template (the operator's worker pod: its image, service account,
    security context, volumes), which reports on itself instead of running the task: admitted
    in the task namespace, which enforces `restricted`, and run by the kubelet as such."""
    core, batch = client.CoreV1Api(release.cluster.api), client.BatchV1Api(release.cluster.api)
    job = batch.read_namespaced_job(finished["image"]["task_id"], release.task_namespace)
    spec = release.cluster.api.sanitize_for_serialization(job.spec.template.spec)
    spec["containers"][0]["command"] = ["python", "-c", SELF_REPORT]
    name = "worker-self-report"
    core.create_namespaced_pod(release.task_namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"gentask.io/test": "true"}},
        "spec": spec})
    try:
        phase = wait_for(lambda: core.read_namespaced_pod(name, release.task_namespace).status.phase, 60,
                         until=lambda p: p in ("Succeeded", "Failed"), what=f"pod {name} to finish",
                         **watching(release.cluster, release.task_namespace))
        log = release.cluster.kubectl("logs", "-n", release.task_namespace, name, check=True).stdout
        assert phase == "Succeeded", log
        assert_restricted(log, f"{name} (the worker's pod template)")
    finally:
        core.delete_namespaced_pod(name, release.task_namespace, grace_period_seconds=0)


def test_network_policies_fence_every_pod_and_name_this_api_server(release: Release, finished: dict):
    """Installed, the policies select every running pod of the release and its task pods, and name this
    cluster's API server (looked up at install: the `kubernetes` Service and its EndpointSlice). The
    node's CNI bridge enforces none: what they allow is tests/unit/chart/test_network_policy.py's."""
    api = client.ApiClient()
    networking = client.NetworkingV1Api(release.cluster.api)
    policies = [api.sanitize_for_serialization(p) for ns in (release.namespace, release.task_namespace)
                for p in networking.list_namespaced_network_policy(ns).items]
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies} == {
        (release.namespace, f"{release.name}-gentask-api"), (release.namespace, f"{release.name}-gentask-operator"),
        (release.task_namespace, f"{release.name}-gentask-workers")}
    core = client.CoreV1Api(release.cluster.api)
    pods = core.list_namespaced_pod(release.namespace).items + core.list_namespaced_pod(
        release.task_namespace, label_selector="app.kubernetes.io/component=worker").items
    assert any(p.metadata.namespace == release.task_namespace for p in pods), "no task pod left to check"
    for pod in pods:
        seen = Pod(pod.metadata.namespace, pod.metadata.labels or {}, name=pod.metadata.name)
        assert sum(policy_selects(p, seen) for p in policies) == 1, pod.metadata.name
    svc = core.read_namespaced_service("kubernetes", "default")
    eps = client.DiscoveryV1Api(release.cluster.api).read_namespaced_endpoint_slice("kubernetes", "default")
    endpoints = [(a, p.port) for e in eps.endpoints for a in e.addresses for p in eps.ports]
    assert endpoints, "the real node's cluster advertises its API server at the node's address"
    task_pod = next(Pod(p.metadata.namespace, p.metadata.labels) for p in pods
                    if p.metadata.namespace == release.task_namespace)
    for ip, port in [*((ip, 443) for ip in svc.spec.cluster_ips), *endpoints]:
        assert allows_egress(policies, task_pod, Address(ip), port), (ip, port, dump(policies))
    assert not allows_egress(policies, task_pod, Address("10.255.255.254"), 443)


def test_operator_metrics_count_the_tasks(release: Release, finished: dict):
    url = release.service_url(f"{release.name}-gentask-operator-metrics", "metrics")
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    succeeded = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("gentask_tasks{") and 'phase="Succeeded"' in line)
    assert succeeded >= len(finished), text[:2000]


def test_upgrade_recreates_the_operator_which_serves_a_task_made_with_kubectl(release: Release, finished: dict):
    """`helm upgrade` of an operator setting: Recreate replaces the operator pod, the new one is
    Ready (its probes) when `--wait` returns and answers /readyz through the Service at once, and
    it runs a task created with `kubectl apply` (only the operator's Deployment changes; the API
    keeps its pod)."""
    core = client.CoreV1Api(release.cluster.api)
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
    metrics = f"{release.name}-gentask-operator-metrics"
    before = {p.metadata.name for p in core.list_namespaced_pod(release.namespace, label_selector=selector).items}
    helm("upgrade", release.name, str(CHART), "--namespace", release.namespace, "--reuse-values",
         "--set", "operator.resyncSeconds=7", "--wait", "--timeout", "180s", kubeconfig=release.cluster.kubeconfig)
    upgraded = time.monotonic()
    status = json.loads(helm("status", release.name, "--namespace", release.namespace, "-o", "json",
                             kubeconfig=release.cluster.kubeconfig).stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"

    def serving() -> set[str]:
        """The operator pods that are Ready and not on their way out."""
        return {p.metadata.name for p in core.list_namespaced_pod(release.namespace, label_selector=selector).items
                if not p.metadata.deletion_timestamp
                and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])}
    after = wait_for(serving, 30, until=lambda pods: pods and not pods & before, what="the new operator pod",
                     **watching(release.cluster, release.namespace))
    assert len(after) == 1, after
    # Through the Service: the URL is asked for again at every try, so that the port-forward goes
    # to the pod the Service routes to now (the old pod's forward died with it).
    wait_for(lambda: release.readyz(metrics, "metrics"), 30, what="the new operator's /readyz through its Service",
             **watching(release.cluster, release.namespace))
    assert service_backend(release.cluster, release.namespace, metrics, "metrics")[0] in after
    print(f"\nhelm upgrade --wait, then the new operator's /readyz 200 {time.monotonic() - upgraded:.1f}s later")
    manifest = (ROOT / "examples" / "image-fake.yaml").read_text()
    release.cluster.kubectl("apply", "-n", release.task_namespace, "-f", "-", input=manifest, check=True)
    name = yaml.safe_load(manifest)["metadata"]["name"]

    def phase() -> str:
        proc = release.cluster.kubectl("get", "gt", name, "-n", release.task_namespace, "-o",
                                       "jsonpath={.status.phase}")
        return proc.stdout
    assert wait_for(phase, 120, interval=0.5, until=lambda p: p in ("Succeeded", "Failed", "Cancelled"),
                    what=f"task {name} to finish",
                    progress=task_progress(release.cluster, release.task_namespace, name),
                    describe=lambda: release.describe(name)) == "Succeeded"


def test_uninstall_removes_everything_but_the_crd(release: Release, finished: dict):
    """The last test of the module: what `helm uninstall` leaves behind."""
    cluster = release.cluster
    manifest = helm_manifest(release)
    helm("uninstall", release.name, "--namespace", release.namespace, "--wait", "--timeout", "120s",
         kubeconfig=cluster.kubeconfig)
    core = client.CoreV1Api(cluster.api)

    def gone(kind: str, name: str, namespace: str | None) -> bool:
        args = ["get", kind, name] + (["-n", namespace] if namespace else [])
        proc = cluster.kubectl(*args)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    left, kept = [], []
    for doc in manifest:
        kind, meta = doc["kind"], doc["metadata"]
        if (meta.get("annotations") or {}).get("helm.sh/resource-policy") == "keep":
            kept.append(f"{kind}/{meta['name']}")
            assert not gone(kind, meta["name"], meta.get("namespace")), f"{kind}/{meta['name']} was not kept"
            continue
        if kind == "Namespace":     # deleted with everything in it: tasks, Jobs, the Secret
            wait_for(lambda name=meta["name"]: gone("namespace", name, None), 120, interval=1,
                     what=f"task namespace {meta['name']} to be deleted",
                     **watching(cluster, meta["name"]))
        elif not gone(kind, meta["name"], meta.get("namespace")):
            left.append(f"{kind}/{meta['name']}")
    assert not left, f"helm uninstall left {left}"
    # kept on purpose (docs/helm.md): the CRD (and so every task), and the webhook signing key that
    # receivers verify with, which a reinstall must not change behind their back
    assert sorted(kept) == sorted([f"CustomResourceDefinition/{CRD_NAME}",
                                   "CustomResourceDefinition/generationquotas.gentask.io",
                                   f"Secret/{release.name}-gentask-webhook-signing-key"]), kept
    assert {d["metadata"]["name"] for d in manifest if d["kind"] == "PriorityClass"} == set(PRIORITY_CLASSES)
    # the operator and API pods are gone
    wait_for(lambda: [(p.metadata.name, p.status.phase) for p in core.list_namespaced_pod(release.namespace).items],
             60, until=lambda pods: not pods, what="the release's pods to go",
             **watching(cluster, release.namespace))
    # the CRD stays (helm.sh/resource-policy: keep), and with it the API
    crd = client.ApiextensionsV1Api(cluster.api).read_custom_resource_definition(CRD_NAME)
    assert crd.metadata.annotations.get("helm.sh/resource-policy") == "keep"
    assert release.cluster.kubectl("get", "gt", "-A").returncode == 0
