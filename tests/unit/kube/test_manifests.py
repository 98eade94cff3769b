"""What the operator creates for a task, and how it writes status (pure functions)."""

import time
from datetime import UTC, datetime, timedelta

from gentask.config import load_settings
from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask
from gentask.kube.conditions import get_condition, set_condition
from gentask.kube.jobs import job_manifest, worker_rbac
from gentask.kube.status import status_patch, transition

RAW = {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
       "metadata": {"name": "img-1", "namespace": "tasks", "uid": "u-1", "generation": 1, "resourceVersion": "41"},
       "spec": {"type": "image", "provider": "fake", "model": "fake-image", "prompt": "p", "priority": "critical",
                "retries": 2, "timeoutSeconds": 120, "ttlSecondsAfterFinished": 60}}
TASK = GenerationTask.model_validate(RAW)


def test_job_follows_the_task():
    job = job_manifest(TASK, load_settings(worker_image="gentask:test"))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "img-1" and job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"]) == (2, 120, 60)
    assert pod["priorityClassName"] == "gentask-critical" and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["command"] == ["gentask", "worker", "run", "tasks/img-1"]
    assert pod["containers"][0]["image"] == "gentask:test"


def test_the_task_pod_requests_and_caps_node_disk_and_sizes_its_tmp():
    pod = job_manifest(TASK, load_settings())["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
        "limits": {"memory": "512Mi", "ephemeral-storage": "512Mi"}}
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    custom = load_settings(worker_ephemeral_storage_request="1Gi", worker_ephemeral_storage_limit="4Gi",
                           worker_tmp_size_limit="3Gi")
    pod = job_manifest(TASK, custom)["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert (resources["requests"]["ephemeral-storage"], resources["limits"]["ephemeral-storage"]) == ("1Gi", "4Gi")
    assert pod["volumes"][0]["emptyDir"] == {"sizeLimit": "3Gi"}


def test_no_secret_value_in_the_job(monkeypatch):
    monkeypatch.setenv("ARK_API_KEY", "ark-very-secret")
    monkeypatch.setenv("MONGO_URL", "mongodb://user:pw-secret@db/gentask")
    job = job_manifest(TASK, load_settings())
    text = repr(job)
    assert "ark-very-secret" not in text and "pw-secret" not in text


def test_one_worker_account_a_namespace_may_only_patch_task_statuses():
    sa, role, binding = worker_rbac("tasks")
    assert sa["metadata"]["name"] == role["metadata"]["name"] == binding["metadata"]["name"] == "gentask-worker"
    assert {o["metadata"]["namespace"] for o in (sa, role, binding)} == {"tasks"}
    assert role["rules"] == [{"apiGroups": ["gentask.io"], "resources": ["generationtasks/status"],
                              "verbs": ["patch"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gentask-worker", "namespace": "tasks"}]


def test_the_pod_carries_the_queued_task_for_its_worker():
    job = job_manifest(TASK, load_settings())
    pod = job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "gentask-worker"
    carried = GenerationTask.model_validate_json(pod["metadata"]["annotations"]["gentask.io/task"])
    assert (carried.name, carried.namespace, carried.uid) == (TASK.name, TASK.namespace, TASK.uid)
    assert carried.metadata.resource_version == TASK.metadata.resource_version and carried.spec == TASK.spec
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["GENTASK_TASK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.annotations['gentask.io/task']"


def test_conditions_keep_their_transition_time():
    conds = set_condition(None, "Running", "True", "Started", "go", 1)
    first = get_condition(conds, "Running").last_transition_time
    time.sleep(1.1)
    same = set_condition(conds, "Running", "True", "Started", "still going", 1)
    assert get_condition(same, "Running").last_transition_time == first
    flipped = set_condition(same, "Running", "False", "Completed", "", 1)
    assert get_condition(flipped, "Running").last_transition_time != first


def test_conditions_take_a_clock_and_record_the_generation():
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    clock = iter([t0, t0 + timedelta(minutes=1), t0 + timedelta(minutes=2)])
    conds = set_condition([], "Running", "True", "Started", "go", 1, now=lambda: next(clock))
    assert get_condition(conds, "Running").last_transition_time == t0
    same = set_condition(conds, "Running", "True", "Started", "still", 2, now=lambda: next(clock))
    running = get_condition(same, "Running")
    assert running.last_transition_time == t0 and running.observed_generation == 2 and running.message == "still"
    flipped = set_condition(same, "Running", "False", "Completed", "", now=lambda: next(clock))
    running = get_condition(flipped, "Running")
    assert running.last_transition_time == t0 + timedelta(minutes=1) and running.observed_generation == 2
    assert [c.type for c in set_condition(flipped, "Succeeded", "True", "Completed")] == ["Running", "Succeeded"]


def test_transition_to_a_terminal_phase_sets_conditions_and_completion():
    status = transition(TASK, Phase.FAILED, "ContentRejected", "no")
    patch = status_patch(status)
    assert patch["phase"] == "Failed" and patch["completionTime"] and patch["observedGeneration"] == 1
    succeeded = get_condition(status.conditions, "Succeeded")
    assert succeeded.status == "False" and succeeded.reason == "ContentRejected"
    invalid = transition(TASK, Phase.FAILED, "InvalidSpec", "bad size")
    assert get_condition(invalid.conditions, "Accepted").status == "False"


def test_the_status_patch_holds_what_the_transition_sets_and_no_more():
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    queued = status_patch(transition(TASK, Phase.QUEUED, "JobCreated", "made", now=lambda: t0, job_name="img-1",
                                     attempts=0))
    assert queued == {
        "phase": "Queued", "reason": "JobCreated", "message": "made", "observedGeneration": 1, "attempts": 0,
        "jobName": "img-1",
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "JobCreated", "message": "made",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1},
            {"type": "Scheduled", "status": "True", "reason": "JobCreated", "message": "made",
             "lastTransitionTime": "2026-01-02T03:04:05Z", "observedGeneration": 1}]}
    later = TASK.model_copy(update={"status": TASK.status.model_validate({**queued, "startTime": "2026-01-02T03:05:00Z",
                                                                          "completionTime": "2026-01-02T03:06:00Z"})})
    done = status_patch(transition(later, Phase.SUCCEEDED, "Completed", "", now=lambda: t0 + timedelta(hours=1)))
    assert "completionTime" not in done and "startTime" not in done      # only when it first becomes terminal
    assert [c["type"] for c in done["conditions"]] == ["Accepted", "Scheduled", "Running", "Succeeded"]
    assert done["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_the_price_overrides_go_to_the_worker_that_computes_the_cost():
    prices = '{"fake/fake-image": {"perImage": "0.5"}}'
    env = {e["name"]: e for e in job_manifest(TASK, load_settings(prices=prices))["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["GENTASK_PRICES"]["value"] == prices
    default = job_manifest(TASK, load_settings(prices=""))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "GENTASK_PRICES" not in {e["name"] for e in default}
