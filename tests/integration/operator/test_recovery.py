"""What the pod cannot report, the operator does: backoff exhausted, an evicted pod, a Job
deleted behind its back; and what a happy task costs in API writes."""

from __future__ import annotations

import ssl
import urllib.request

import pytest
from kubernetes import client

from tests.integration.operator.conftest import free_port
from tests.support.waits import wait_for


@pytest.mark.timeout(180)
def test_backoff_limit_exceeded_names_the_last_error(cluster, tasks):
    # the artifact store is unreachable for this namespace's workers: every attempt exits "retry"
    client.CoreV1Api(cluster.api).patch_namespaced_secret("gentask-credentials", tasks.ns, {
        "stringData": {"MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/gentask?serverSelectionTimeoutMS=500"}})
    name = tasks.create(type="image", model="fake-image", prompt="nowhere to keep it", retries=1,
                        params={"size": "64x64"})
    status = tasks.wait_phase(name, "Failed", timeout=150)
    assert status["reason"] == "BackoffLimitExceeded"
    assert "all 2 attempt(s) failed" in status["message"] and "artifact store unavailable" in status["message"]
    assert status["attempts"] == 2


def _worker_pod(cluster, ns, name):
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(ns, label_selector=f"job-name={name}").items
    running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
    return running[0] if running else None


def test_an_evicted_pod_is_retried_without_using_an_attempt(cluster, tasks):
    name = tasks.create(type="video", model="fake-video", prompt="evict me [latency:6s]", params={"duration": 1})
    tasks.wait_status(name, lambda s: s.get("providerTaskID"), 60, what="to start its vendor job")
    pod = _worker_pod(cluster, tasks.ns, name)
    client.CoreV1Api(cluster.api).create_namespaced_pod_eviction(pod.metadata.name, tasks.ns, {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod.metadata.name, "namespace": tasks.ns}})
    status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded" and status["attempts"] == 1
    assert status["workerPod"] != pod.metadata.name                       # a second pod finished the job
    job = client.BatchV1Api(cluster.api).read_namespaced_job_status(name, tasks.ns)
    assert not job.status.failed                                           # the eviction cost no retry


def test_a_job_deleted_behind_our_back_is_recreated(cluster, tasks):
    name = tasks.create(type="video", model="fake-video", prompt="keep going [latency:6s]", params={"duration": 1})
    tasks.wait_status(name, lambda s: s.get("providerTaskID"), 60, what="to start its vendor job")
    job = client.BatchV1Api(cluster.api).read_namespaced_job(name, tasks.ns)
    client.BatchV1Api(cluster.api).delete_namespaced_job(name, tasks.ns, propagation_policy="Background")
    wait_for(lambda: _job_uid(cluster, tasks.ns, name), 60, until=lambda uid: uid and uid != job.metadata.uid,
             what="the operator to recreate the Job", **tasks.watching(name))
    status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded"
    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        tasks.ns, field_selector=f"involvedObject.name={name},involvedObject.kind=GenerationTask").items
    assert any(e.reason == "JobDeleted" and e.type == "Warning" for e in events)


def _job_uid(cluster, ns, name):
    jobs = [j for j in client.BatchV1Api(cluster.api).list_namespaced_job(ns).items if j.metadata.name == name]
    return jobs[0].metadata.uid if jobs else None


def test_a_happy_task_costs_few_writes_and_kopf_leaves_no_trace(cluster, operator, tasks):
    kinds = ("ServiceAccount", "Role", "RoleBinding", "Job", "status", "event")

    def writes() -> dict[str, float]:
        return {k: operator.metric("gentask_operator_api_writes_total", kind=k) for k in kinds}

    def one_task(prompt: str) -> tuple[str, dict[str, float]]:
        before = writes()
        name = tasks.create(type="text", model="fake-text", prompt=prompt)
        tasks.wait_phase(name, "Succeeded", timeout=60)
        wait_for(lambda: operator.metric("gentask_operator_api_writes_total", kind="event") - before["event"], 20,
                 until=lambda events: events >= 1, what="the Succeeded event", **tasks.watching(name))
        after = writes()
        return name, {k: after[k] - before[k] for k in kinds}
    # the first task of a namespace makes its worker account; every task: its Job, Queued, one Event
    _first, spent = one_task("the first of its namespace")
    assert spent == {"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Job": 1, "status": 1, "event": 1}
    name, spent = one_task("count my writes")
    assert spent == {"ServiceAccount": 0, "Role": 0, "RoleBinding": 0, "Job": 1, "status": 1, "event": 1}
    # the worker's own: Running and Succeeded, two patches of the status, none of them a read
    assert tasks.status(name)["attempts"] == 1
    meta = tasks.get(name)["metadata"]
    assert not meta.get("finalizers")
    assert not [a for a in (meta.get("annotations") or {}) if "kopf" in a]


def _service_account_creates(cluster) -> dict[str, float]:
    """POSTs of serviceaccounts the API server answered, by code, from its own /metrics."""
    conf = cluster.api.configuration
    tls = ssl.create_default_context(cafile=conf.ssl_ca_cert)
    if conf.cert_file:
        tls.load_cert_chain(conf.cert_file, conf.key_file)
    token = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix("authorization")
    headers = {"Authorization": token} if token else {}
    with urllib.request.urlopen(urllib.request.Request(conf.host + "/metrics", headers=headers), context=tls,
                                timeout=30) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="serviceaccounts"' in line \
                and 'verb="POST"' in line and 'subresource=""' in line:
            code = line.split('code="', 1)[1].split('"', 1)[0]
            counts[code] = counts.get(code, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_a_burst_of_first_tasks_makes_the_worker_account_once(cluster, operator, tasks):
    """Twenty tasks arrive at once in a namespace the operator has not served: its worker account
    is made by one create each, not one per task that found it missing (refused with 409)."""
    before = _service_account_creates(cluster)
    names = [tasks.create(type="text", model="fake-text", prompt=f"burst {i}") for i in range(20)]
    for name in names:
        tasks.wait_phase(name, "Succeeded", timeout=120)
    after = _service_account_creates(cluster)
    spent = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    assert spent.get("201", 0) == 1 and spent.get("409", 0) == 0, spent
