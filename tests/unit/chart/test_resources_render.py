"""Node disk, bounded: every container the chart renders, and every task pod the operator makes from
the chart's settings, requests and caps ephemeral-storage, and every emptyDir has a sizeLimit."""

from __future__ import annotations

import pytest

from gentask.config import load_settings, parse_quantity
from gentask.domain.task import GenerationTask
from gentask.kube.jobs import job_manifest
from tests.support.helm import CHART, helm, render
from tests.unit.chart.test_render import by_kind, env_of, one

TASK = GenerationTask.model_validate({
    "apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
    "metadata": {"name": "img-1", "namespace": "gentask-tasks", "uid": "u-1", "resourceVersion": "1"},
    "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "p"}})


def assert_disk_bounded(pod: dict, where: str) -> None:
    limits = 0.0
    for c in pod["containers"]:
        res = c["resources"]
        assert parse_quantity(res["requests"]["ephemeral-storage"]) > 0, f"{where}/{c['name']}: no request"
        limit = parse_quantity(res["limits"]["ephemeral-storage"])
        assert limit >= parse_quantity(res["requests"]["ephemeral-storage"]), f"{where}/{c['name']}"
        limits += limit
    for volume in pod.get("volumes", []):
        if "emptyDir" in volume:
            size = parse_quantity(volume["emptyDir"]["sizeLimit"])
            assert 0 < size <= limits, f"{where}: emptyDir {volume['name']} {size} over the pod's limit {limits}"


@pytest.mark.parametrize("executor", ["job", "inline", "pool"])
def test_every_container_of_the_chart_requests_and_caps_node_disk(executor: str):
    deployments = by_kind(render("--set", f"operator.executor={executor}"), "Deployment")
    assert len(deployments) == (3 if executor == "pool" else 2)
    for dep in deployments:
        assert_disk_bounded(dep["spec"]["template"]["spec"], dep["metadata"]["name"])


def test_the_task_pods_get_the_charts_worker_settings():
    docs = render("--set", "operator.worker.ephemeralStorageRequest=100Mi",
                  "--set", "operator.worker.ephemeralStorageLimit=2Gi", "--set", "operator.worker.tmpSizeLimit=1Gi",
                  "--set", "tmpVolume.sizeLimit=128Mi")
    env = {name: e["value"] for name, e in env_of(one(docs, "Deployment", "operator")).items() if "value" in e}
    # the operator's own settings, read from the environment the chart gives it, make the Job
    settings = load_settings(**{name: env[var] for name, var in (
        ("worker_ephemeral_storage_request", "GENTASK_WORKER_EPHEMERAL_STORAGE_REQUEST"),
        ("worker_ephemeral_storage_limit", "GENTASK_WORKER_EPHEMERAL_STORAGE_LIMIT"),
        ("worker_tmp_size_limit", "GENTASK_WORKER_TMP_SIZE_LIMIT"),
        ("worker_cpu_request", "GENTASK_WORKER_CPU_REQUEST"),
        ("worker_memory_request", "GENTASK_WORKER_MEMORY_REQUEST"),
        ("worker_memory_limit", "GENTASK_WORKER_MEMORY_LIMIT"))})
    pod = job_manifest(TASK, settings)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "100Mi"},
        "limits": {"memory": "512Mi", "ephemeral-storage": "2Gi"}}
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert_disk_bounded(pod, "task pod")
    for dep in by_kind(docs, "Deployment"):
        assert dep["spec"]["template"]["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "128Mi"}}]


def test_the_schema_refuses_bad_quantities():
    for bad in (["--set", "operator.worker.ephemeralStorageLimit=lots"], ["--set", "tmpVolume.sizeLimit=1 Gi"],
                ["--set", "operator.worker.tmpSizeLimit="], ["--set", "tmpVolume.other=1"]):
        proc = helm("template", "t", str(CHART), "--kube-version", "1.36.3", *bad, check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, f"{bad} was accepted:\n{proc.stderr}"
