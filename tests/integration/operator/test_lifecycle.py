"""A GenerationTask's life through the operator, its Job, the process node and the real worker."""

from __future__ import annotations

import hashlib

import pymongo
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from gentask.kube.names import WORKER_ACCOUNT
from tests.integration.operator.conftest import EVERY_TYPE, artifact_bytes
from tests.support.waits import wait_for


@EVERY_TYPE
def test_success_for_every_type_with_artifacts(cluster, tasks, type_, model, params, check):
    name = tasks.create(type=type_, model=model, prompt="a red fox in the snow", params=params, priority="critical")
    status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded", status
    assert status["reason"] == "Completed" and status["attempts"] == 1
    assert status["servedBy"] == {"provider": "fake", "model": model}
    assert status["jobName"] == name and status["startTime"] and status["completionTime"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "True" and conds["Accepted"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in conds.values())
    result = status["result"]
    if type_ == "text":
        assert result["text"] and len(result["text"].split()) <= 12
        return
    ref = result["images"][0] if type_ == "image" else result["video"]
    data = artifact_bytes(cluster, ref["artifact"])
    assert hashlib.sha256(data).hexdigest() == ref["sha256"] and len(data) == ref["sizeBytes"]
    assert check(data)


def test_the_job_is_made_as_specified(cluster, tasks):
    name = tasks.create(type="text", model="fake-text", prompt="hello", priority="low", retries=2,
                        timeoutSeconds=300)
    tasks.wait_phase(name, "Succeeded", timeout=90)
    job = client.BatchV1Api(cluster.api).read_namespaced_job(name, tasks.ns)
    owner = job.metadata.owner_references[0]
    assert owner.kind == "GenerationTask" and owner.name == name and owner.controller
    assert job.spec.backoff_limit == 2 and job.spec.active_deadline_seconds == 300
    pod = job.spec.template.spec
    assert pod.priority_class_name == "gentask-low" and pod.service_account_name == WORKER_ACCOUNT
    assert pod.security_context.run_as_non_root and pod.security_context.seccomp_profile.type == "RuntimeDefault"
    container = pod.containers[0]
    assert container.security_context.capabilities.drop == ["ALL"]
    assert not container.security_context.allow_privilege_escalation
    assert container.security_context.read_only_root_filesystem
    rules = job.spec.pod_failure_policy.rules
    assert rules[0].action == "FailJob" and rules[0].on_exit_codes.values == [3]
    assert rules[1].action == "Ignore" and rules[1].on_pod_conditions[0].type == "DisruptionTarget"
    secret_refs = {e.name: e.value_from.secret_key_ref for e in container.env
                   if e.value_from and e.value_from.secret_key_ref}
    assert {"ARK_API_KEY", "OPENAI_API_KEY", "MONGO_URL"} <= set(secret_refs)
    assert all(ref.name == "gentask-credentials" for ref in secret_refs.values())
    # node disk requested and capped (the scheduler placed it on a node that has some: it ran)
    assert container.resources.requests["ephemeral-storage"] == "64Mi"
    assert container.resources.limits["ephemeral-storage"] == "512Mi"
    assert [v.empty_dir.size_limit for v in pod.volumes] == ["256Mi"]


def pod_token(cluster, namespace: str, pod: client.V1Pod) -> str:
    """A token of the worker account bound to this pod: what the kubelet mounts in it."""
    body = {"spec": {"expirationSeconds": 600, "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                                                   "name": pod.metadata.name,
                                                                   "uid": pod.metadata.uid}}}
    made = client.CoreV1Api(cluster.api).create_namespaced_service_account_token(WORKER_ACCOUNT, namespace, body)
    return made.status.token


def test_a_worker_token_reaches_its_own_task_status_and_nothing_else(cluster, tasks):
    import asyncio
    import dataclasses

    from gentask.kube.client import KubeClient
    from gentask.kube.config import StaticToken, load_connection
    from gentask.kube.errors import KubeError

    mine = tasks.create(type="text", model="fake-text", prompt="one")
    other = tasks.create(type="text", model="fake-text", prompt="two")
    tasks.wait_phase(mine, "Succeeded", timeout=90)
    tasks.wait_phase(other, "Succeeded", timeout=90)
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(tasks.ns, label_selector=f"job-name={mine}").items
    assert pods, f"no pod of Job {mine}"
    token = pod_token(cluster, tasks.ns, pods[0])
    connection = dataclasses.replace(load_connection(str(cluster.kubeconfig)), tokens=StaticToken(token))

    async def attempts() -> dict[str, object]:
        out: dict[str, object] = {}
        async with KubeClient(connection, light=True) as kube:
            for what, call in {
                "touch mine": lambda: kube.touch_task_status(tasks.ns, mine),
                "touch other": lambda: kube.touch_task_status(tasks.ns, other),
                "patch other": lambda: kube.patch_task_status(tasks.ns, other, {"message": "mine now"}),
                "get mine": lambda: kube.get_task(tasks.ns, mine),
                "get other": lambda: kube.get_task(tasks.ns, other),
                "list": lambda: kube.request("GET", f"/apis/gentask.io/v1alpha1/namespaces/{tasks.ns}/generationtasks"),
                "secret": lambda: kube.request("GET", f"/api/v1/namespaces/{tasks.ns}/secrets/gentask-credentials"),
                "secrets": lambda: kube.request("GET", f"/api/v1/namespaces/{tasks.ns}/secrets"),
            }.items():
                try:
                    out[what] = await call()
                except KubeError as exc:
                    out[what] = exc
        return out
    got = asyncio.run(attempts())
    assert isinstance(got["touch mine"], dict) and got["touch mine"]["spec"]["prompt"] == "one", got["touch mine"]
    for what in ("touch other", "patch other", "get mine", "get other", "list", "secret", "secrets"):
        assert isinstance(got[what], KubeError) and got[what].status == 403, (what, got[what])
    assert "only the status of the task its own pod runs" in got["patch other"].message
    assert tasks.status(other)["phase"] == "Succeeded" and tasks.status(other).get("message") != "mine now"


def test_invalid_spec_fails_without_a_job(cluster, tasks):
    name = tasks.create(type="image", model="doubao-seedream-3-0-t2i-250415", provider="volcengine",
                        prompt="x", params={"size": "999x999"})
    status = tasks.wait_phase(name, "Failed", timeout=30)
    assert status["reason"] == "InvalidSpec" and "999x999" in status["message"]
    with pytest.raises(ApiException) as err:
        client.BatchV1Api(cluster.api).read_namespaced_job(name, tasks.ns)
    assert err.value.status == 404


def test_retryable_failure_then_success(cluster, tasks):
    name = tasks.create(type="text", model="fake-text", prompt="hi [fail-first:2:rate_limited]", retries=3)
    status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=90)
    assert status["phase"] == "Succeeded" and status["attempts"] == 1


def test_permanent_failure_fails_at_once_without_retries(cluster, tasks):
    name = tasks.create(type="image", model="fake-image", prompt="x [fail:content_rejected]", retries=3)
    status = tasks.wait_phase(name, "Failed", timeout=60)
    assert status["reason"] == "ContentRejected" and status["attempts"] == 1
    batch = client.BatchV1Api(cluster.api)
    failed = wait_for(lambda: next((c for c in batch.read_namespaced_job_status(name, tasks.ns).status.conditions or []
                                    if c.type == "Failed"), None), 30, what=f"Job {name} to fail",
                      **tasks.watching(name))
    assert failed.reason == "PodFailurePolicy"          # at once: no second pod
    assert batch.read_namespaced_job_status(name, tasks.ns).status.failed == 1


def test_retries_exhausted_names_the_last_error(cluster, tasks):
    name = tasks.create(type="text", model="fake-text", prompt="x [fail:overloaded]", retries=1)
    status = tasks.wait_phase(name, "Failed", timeout=60)
    assert status["reason"] == "ProviderOverloaded"
    assert [f["reason"] for f in status["providerFailures"]] == ["ProviderOverloaded"]


def test_timeout_fails_with_deadline_exceeded(cluster, tasks):
    name = tasks.create(type="video", model="fake-video", prompt="slow [latency:5m]", timeoutSeconds=10,
                        params={"duration": 1})
    status = tasks.wait_phase(name, "Failed", timeout=60)
    assert status["reason"] == "DeadlineExceeded"


def test_cancel_while_queued(cluster, tasks):
    core = client.CoreV1Api(cluster.api)
    core.patch_node("gentask-node", {"spec": {"unschedulable": True}})     # nothing can start
    try:
        name = tasks.create(type="text", model="fake-text", prompt="never runs")
        tasks.wait_phase(name, "Queued", timeout=30)
        tasks.patch_spec(name, cancel=True)
        status = tasks.wait_phase(name, "Cancelled", timeout=30)
        assert status["reason"] == "Cancelled"
    finally:
        core.patch_node("gentask-node", {"spec": {"unschedulable": False}})
    wait_for(lambda: [j.metadata.name for j in client.BatchV1Api(cluster.api).list_namespaced_job(tasks.ns).items],
             30, until=lambda jobs: not jobs, what="the Job to be deleted", **tasks.watching(name))


def test_cancel_while_running_cancels_the_vendor_job(cluster, tasks):
    name = tasks.create(type="video", model="fake-video", prompt="long [latency:5m]", params={"duration": 1})
    running = tasks.wait_status(name, lambda s: s.get("providerTaskID"), 60, what="to submit its vendor job")
    assert running["phase"] == "Running"
    tasks.patch_spec(name, cancel=True)
    status = tasks.wait_phase(name, "Cancelled", timeout=30)
    assert running["providerTaskID"] in status["message"]
    core = client.CoreV1Api(cluster.api)
    wait_for(lambda: [(p.metadata.name, p.status.phase) for p in core.list_namespaced_pod(
        tasks.ns, label_selector=f"job-name={name}").items], 30, until=lambda pods: not pods,
        what="the worker pod to be gone", **tasks.watching(name))


def test_deleting_a_task_removes_its_job_and_marks_the_record(cluster, tasks):
    name = tasks.create(type="video", model="fake-video", prompt="long [latency:5m]", params={"duration": 1})
    tasks.wait_phase(name, "Running", timeout=60)
    uid = tasks.get(name)["metadata"]["uid"]
    tasks.delete(name)
    batch = client.BatchV1Api(cluster.api)
    wait_for(lambda: [(j.metadata.name, j.metadata.deletion_timestamp)
                      for j in batch.list_namespaced_job(tasks.ns).items], 60,
             until=lambda jobs: not jobs, what="the Job to be garbage-collected", **tasks.watching(name))
    db = pymongo.MongoClient(cluster.mongo_url)["gentask"]
    record = wait_for(lambda: db.tasks.find_one({"_id": uid}), 30, until=lambda r: r and r.get("deleted"),
                      what="the mirror record to be marked deleted", **tasks.watching(name))
    assert record["name"] == name and record["phase"] == "Running"


def test_status_changes_are_mirrored_and_events_recorded(cluster, tasks):
    name = tasks.create(type="image", model="fake-image", prompt="mirror me", params={"size": "64x64"})
    tasks.wait_phase(name, "Succeeded", timeout=90)
    uid = tasks.get(name)["metadata"]["uid"]
    db = pymongo.MongoClient(cluster.mongo_url)["gentask"]
    record = wait_for(lambda: db.tasks.find_one({"_id": uid}), 30, until=lambda r: r and r["phase"] == "Succeeded",
                      what="the mirror to reach Succeeded", **tasks.watching(name))
    assert record["userID"] == "tester" and record["result"]["images"][0]["sha256"]
    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        tasks.ns, field_selector=f"involvedObject.name={name},involvedObject.kind=GenerationTask").items
    reasons = [e.reason for e in sorted(events, key=lambda e: int(e.metadata.resource_version))]
    assert reasons == ["Completed"]          # one Event a task: its outcome (Queued, Running: in the status)
    assert events[0].message.endswith("after 1 attempt") and events[0].type == "Normal"
