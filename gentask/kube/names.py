"""Names and labels of what the operator makes for a task (all deterministic: made exactly once)."""

from __future__ import annotations

from typing import Any

from gentask.domain.task import API_VERSION, KIND, GenerationTask

LABEL_TASK = "gentask.io/task"
LABEL_TYPE = "gentask.io/type"
LABEL_PRIORITY = "gentask.io/priority"
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = {"app.kubernetes.io/name": "gentask", "app.kubernetes.io/managed-by": "gentask-operator"}
WORKER_CONTAINER = "worker"

# Server-side field selectors (the CRD declares .status.phase a selectableField): watches and
# lists of unfinished tasks only, so a finished task costs a watcher nothing, however many there are.
UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Cancelled"
# Jobs without a succeeded pod (running, or failed for good): a completed Job leaves the operator's watch.
UNSUCCESSFUL_JOBS = "status.successful=0"

# The worker's exit codes: what tells the Job to stop (podFailurePolicy FailJob) or to retry.
EXIT_OK = 0
EXIT_RETRY = 1        # infrastructure trouble (API server, artifact store): the Job may try again
EXIT_PERMANENT = 3    # the task failed for good (provider refused, retries spent, invalid spec)


def job_name(task_name: str) -> str:
    """The Job is named like its task (task names are at most 63 characters, enforced by the CRD)."""
    return task_name


# Every worker of a namespace runs as this one service account. RBAC lets it patch task statuses
# and nothing else (no get, no Secrets); the ValidatingAdmissionPolicy gentask-worker-own-task
# (crds/gentask-worker-policy.yaml) narrows that to the task its own pod runs, by the pod name
# its pod-bound token carries.
WORKER_ACCOUNT = "gentask-worker"
# The task as the operator queued it, on the worker pod (read through the downward API): a worker
# cannot read tasks, so this is how it learns its spec and the resourceVersion to claim it at.
ANNOTATION_TASK = "gentask.io/task"


def task_labels(task: GenerationTask) -> dict[str, str]:
    """The labels of everything made for a task: who manages it, which task, its type and priority."""
    return {**MANAGED_BY, LABEL_TASK: task.name, LABEL_TYPE: task.spec.type.value,
            LABEL_PRIORITY: task.spec.priority.value}


def owner_reference(task: GenerationTask) -> dict[str, Any]:
    """The controller reference to the task: deleting the task deletes what it owns."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": task.name, "uid": task.uid,
            "controller": True, "blockOwnerDeletion": True}
