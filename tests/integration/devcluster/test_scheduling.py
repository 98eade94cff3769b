"""Priority ordering on a saturated node, and garbage collection of owned Jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster.cluster import with_checkout
from gentask.domain import GROUP, PLURAL, VERSION
from tests.support.waits import file_progress, wait_for, watching


@pytest.fixture
def one_slot_node(cluster, tmp_path):
    """A second process node with room for one pod, tainted so only this test's pods land there."""
    name = f"slot-{uuid.uuid4().hex[:6]}"
    proc = subprocess.Popen([sys.executable, "-m", "devcluster.node", f"--kubeconfig={cluster.kubeconfig}",
                             f"--name={name}", f"--root={tmp_path / 'node'}", "--pods=1", "--cpu=1",
                             f"--taint=gentask.io/test={name}:NoSchedule", f"--label=gentask.io/slot={name}"],
                            stdout=open(tmp_path / "node.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=with_checkout(dict(os.environ)))
    core = client.CoreV1Api(cluster.api)

    def ready():
        try:
            node = core.read_node(name)
        except ApiException:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    log = tmp_path / "node.log"
    try:
        wait_for(ready, 30, what=f"node {name} to be Ready", progress=file_progress(log),
                 describe=lambda: "node log:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        yield name
    finally:
        proc.terminate()
        proc.wait(10)
        core.delete_node(name)


def _pin(name: str) -> dict:
    return {"nodeSelector": {"gentask.io/slot": name},
            "tolerations": [{"key": "gentask.io/test", "operator": "Equal", "value": name, "effect": "NoSchedule"}]}


def test_critical_runs_before_default_before_low(cluster, namespace, one_slot_node, tmp_path):
    core, batch = client.CoreV1Api(cluster.api), client.BatchV1Api(cluster.api)
    sched = client.SchedulingV1Api(cluster.api)
    try:
        sched.create_priority_class({"metadata": {"name": "gentask-test-blocker"}, "value": 1000000,
                                     "preemptionPolicy": "Never"})
    except ApiException as exc:
        assert exc.status == 409
    order = tmp_path / "order.txt"
    core.create_namespaced_pod(namespace, {"metadata": {"name": "blocker"}, "spec": {
        **_pin(one_slot_node), "priorityClassName": "gentask-test-blocker", "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c",
                                                                           "import time; time.sleep(600)"]}]}})
    wait_for(lambda: core.read_namespaced_pod("blocker", namespace).status.phase, 30,
             until=lambda phase: phase == "Running", what="the blocker to hold the slot",
             **watching(cluster, namespace))
    code = f"open({str(order)!r}, 'a').write(__import__('os').environ['JOB'] + '\\n')"
    for prio in ("low", "default", "critical"):
        batch.create_namespaced_job(namespace, {"metadata": {"name": prio}, "spec": {
            "backoffLimit": 0, "template": {"spec": {
                **_pin(one_slot_node), "priorityClassName": f"gentask-{prio}", "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "python:3.11", "command": ["python", "-c", code],
                                "env": [{"name": "JOB", "valueFrom": {"fieldRef": {
                                    "fieldPath": "metadata.labels['job-name']"}}}]}]}}}})

    def unschedulable():
        pods = [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name != "blocker"]
        return sorted(p.metadata.name for p in pods if any(c.type == "PodScheduled" and c.status == "False"
                                                            for c in p.status.conditions or []))
    wait_for(unschedulable, 30, until=lambda pods: len(pods) == 3, what="three Job pods waiting for the slot",
             **watching(cluster, namespace))
    assert sorted(p.spec.priority for p in core.list_namespaced_pod(namespace).items
                  if p.metadata.name != "blocker") == [10, 100, 1000]
    # A pod that failed to schedule waits out a backoff (at most 10 s, the scheduler's default
    # podMaxBackoffSeconds) before it may be tried again; once every backoff has expired the queue
    # is ordered by priority alone, which is what this test is about.
    time.sleep(11)
    core.delete_namespaced_pod("blocker", namespace)
    wait_for(lambda: order.read_text().split() if order.exists() else [], 90, until=lambda done: len(done) == 3,
             what="the three Jobs to run one after another", **watching(cluster, namespace))
    assert order.read_text().split() == ["critical", "default", "low"]


def test_deleting_the_owner_removes_its_job(cluster, namespace):
    custom, batch = client.CustomObjectsApi(cluster.api), client.BatchV1Api(cluster.api)
    task = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "metadata": {"name": "owner"},
        "spec": {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "hi"}})
    batch.create_namespaced_job(namespace, {"metadata": {"name": "owner", "ownerReferences": [{
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "name": "owner",
        "uid": task["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "python:3.11", "command": ["python", "-c", "import time; time.sleep(300)"]}]}}}})
    core = client.CoreV1Api(cluster.api)
    wait_for(lambda: core.list_namespaced_pod(namespace, label_selector="job-name=owner").items, 30,
             what="the owned Job's pod", **watching(cluster, namespace))
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "owner")
    wait_for(lambda: [(j.metadata.name, j.metadata.deletion_timestamp)
                      for j in batch.list_namespaced_job(namespace).items], 60,
             until=lambda jobs: not jobs, what="the garbage collector to remove the Job",
             **watching(cluster, namespace))
    wait_for(lambda: [(p.metadata.name, p.status.phase) for p in core.list_namespaced_pod(namespace).items], 60,
             until=lambda pods: not pods, what="the Job's pod to go", **watching(cluster, namespace))
