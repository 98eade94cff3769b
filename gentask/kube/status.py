"""A task's status transitions: one typed GenerationTaskStatus per write, sent as a merge patch.

`transition` builds the status that moves a task to a phase (phase, reason, message,
observedGeneration, the conditions list whole, completionTime when it first becomes terminal,
plus the caller's fields); `status_patch` is the merge patch of exactly those fields. Writing
goes through the status subresource: gentask.kube.client.KubeClient.patch_task_status.
"""

from __future__ import annotations

from typing import Any

from gentask.domain.reasons import ConditionType, Phase
from gentask.domain.task import GenerationTask, GenerationTaskStatus
from gentask.kube.conditions import MESSAGE_MAX, Clock, ConditionStatus, set_condition, utc_now

# phase -> the condition types it sets, with their status
_PHASE_CONDITIONS: dict[Phase, list[tuple[ConditionType, ConditionStatus]]] = {
    Phase.QUEUED: [(ConditionType.ACCEPTED, "True"), (ConditionType.SCHEDULED, "True")],
    Phase.RUNNING: [(ConditionType.RUNNING, "True")],
    Phase.SUCCEEDED: [(ConditionType.RUNNING, "False"), (ConditionType.SUCCEEDED, "True")],
    Phase.FAILED: [(ConditionType.RUNNING, "False"), (ConditionType.SUCCEEDED, "False")],
    Phase.CANCELLED: [(ConditionType.RUNNING, "False"), (ConditionType.SUCCEEDED, "False")],
}


def transition(task: GenerationTask, phase: Phase, reason: str, message: str = "", *, now: Clock = utc_now,
               **fields: Any) -> GenerationTaskStatus:
    """The status that moves `task` to `phase`, with its conditions, as one write.

    `fields` are further status fields by Python or API name (attempts=1, workerPod=...)."""
    status = task.status
    generation = task.metadata.generation
    conditions = list(status.conditions)
    for type_, value in _PHASE_CONDITIONS.get(phase, []):
        conditions = set_condition(conditions, type_.value, value, reason, message, generation, now=now)
    if phase is Phase.FAILED and reason == "InvalidSpec":
        conditions = set_condition(conditions, ConditionType.ACCEPTED.value, "False", reason, message, generation,
                                   now=now)
    values: dict[str, Any] = {"phase": phase, "reason": reason, "message": message[:MESSAGE_MAX],
                              "observed_generation": generation, "conditions": conditions, **fields}
    if phase.terminal and status.completion_time is None:
        values["completion_time"] = now()
    return GenerationTaskStatus.model_validate(values)


def status_patch(status: GenerationTaskStatus) -> dict[str, Any]:
    """The merge patch of the fields set on `status` (API names, JSON values, no nulls)."""
    return status.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")
