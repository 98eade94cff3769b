"""Writing a task's status: always through the status subresource, as a merge patch."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from gentask.domain.reasons import ConditionType, Phase
from gentask.domain.task import GROUP, PLURAL, VERSION
from gentask.kube.conditions import now_iso, set_condition

MERGE = "application/merge-patch+json"


def get_task(api: client.ApiClient, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def patch_status(api: client.ApiClient, namespace: str, name: str, status: dict[str, Any],
                 resource_version: str | None = None) -> dict:
    """Merge-patch status; with resource_version, fail with 409 if the task changed meanwhile."""
    body: dict[str, Any] = {"status": status}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE)


# phase -> (condition type it sets, status, default reason)
_PHASE_CONDITIONS = {
    Phase.QUEUED: [(ConditionType.ACCEPTED, "True"), (ConditionType.SCHEDULED, "True")],
    Phase.RUNNING: [(ConditionType.RUNNING, "True")],
    Phase.SUCCEEDED: [(ConditionType.RUNNING, "False"), (ConditionType.SUCCEEDED, "True")],
    Phase.FAILED: [(ConditionType.RUNNING, "False"), (ConditionType.SUCCEEDED, "False")],
    Phase.CANCELLED: [(ConditionType.RUNNING, "False"), (ConditionType.SUCCEEDED, "False")],
}


def transition(task: dict, phase: Phase, reason: str, message: str = "", **fields: Any) -> dict[str, Any]:
    """The status patch that moves a task to `phase`, with its conditions, as one write."""
    status = task.get("status") or {}
    generation = task["metadata"].get("generation")
    conditions = status.get("conditions")
    for type_, value in _PHASE_CONDITIONS.get(phase, []):
        conditions = set_condition(conditions, type_.value, value, reason, message, generation)
    if phase is Phase.FAILED and reason == "InvalidSpec":
        conditions = set_condition(conditions, ConditionType.ACCEPTED.value, "False", reason, message, generation)
    patch: dict[str, Any] = {"phase": phase.value, "reason": reason, "message": message[:32768],
                             "observedGeneration": generation, "conditions": conditions, **fields}
    if phase.terminal and not status.get("completionTime"):
        patch["completionTime"] = now_iso()
    return patch
