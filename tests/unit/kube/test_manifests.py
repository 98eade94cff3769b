"""What the operator creates for a task, and how it writes status (pure functions)."""

import time

from gentask.config import load_settings
from gentask.domain.reasons import Phase
from gentask.kube.conditions import get_condition, set_condition
from gentask.kube.jobs import job_manifest, worker_rbac
from gentask.kube.status import transition

TASK = {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
        "metadata": {"name": "img-1", "namespace": "tasks", "uid": "u-1", "generation": 1},
        "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "p", "priority": "critical",
                 "retries": 2, "timeoutSeconds": 120, "ttlSecondsAfterFinished": 60}}


def test_job_follows_the_task():
    job = job_manifest(TASK, load_settings(worker_image="gentask:test"))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "img-1" and job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (2, 120, 60)
    assert pod["priorityClassName"] == "gentask-critical" and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["command"] == ["gentask", "worker", "run", "tasks/img-1"]
    assert pod["containers"][0]["image"] == "gentask:test"


def test_no_secret_value_in_the_job(monkeypatch):
    monkeypatch.setenv("ARK_API_KEY", "ark-very-secret")
    monkeypatch.setenv("MONGO_URL", "mongodb://user:pw-secret@db/gentask")
    job = job_manifest(TASK, load_settings())
    text = repr(job)
    assert "ark-very-secret" not in text and "pw-secret" not in text


def test_worker_rbac_is_its_task_only():
    sa, role, binding = worker_rbac(TASK)
    assert sa["metadata"]["name"] == role["metadata"]["name"] == "gentask-worker-img-1"
    assert all(rule["resourceNames"] == ["img-1"] for rule in role["rules"])
    verbs = {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]}
    assert verbs == {(("generationtasks",), ("get",)), (("generationtasks/status",), ("get", "patch"))}
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]


def test_conditions_keep_their_transition_time():
    conds = set_condition(None, "Running", "True", "Started", "go", 1)
    first = get_condition(conds, "Running")["lastTransitionTime"]
    time.sleep(1.1)
    same = set_condition(conds, "Running", "True", "Started", "still going", 1)
    assert get_condition(same, "Running")["lastTransitionTime"] == first
    flipped = set_condition(same, "Running", "False", "Completed", "", 1)
    assert get_condition(flipped, "Running")["lastTransitionTime"] != first


def test_transition_to_a_terminal_phase_sets_conditions_and_completion():
    patch = transition(TASK, Phase.FAILED, "ContentRejected", "no")
    assert patch["phase"] == "Failed" and patch["completionTime"] and patch["observedGeneration"] == 1
    succeeded = get_condition(patch["conditions"], "Succeeded")
    assert succeeded["status"] == "False" and succeeded["reason"] == "ContentRejected"
    invalid = transition(TASK, Phase.FAILED, "InvalidSpec", "bad size")
    assert get_condition(invalid["conditions"], "Accepted")["status"] == "False"
