"""The GenerationTask resource and its vocabulary; no I/O here."""

from gentask.domain.catalog import CATALOG, InvalidSpecError, ModelRetiredError, ModelSpec, Target, validate_spec
from gentask.domain.reasons import REASONS, RETRYABLE_REASONS, ConditionType, Phase
from gentask.domain.task import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Artifact,
    Condition,
    GenerationTask,
    GenerationTaskSpec,
    GenerationTaskStatus,
    ModelRef,
    Params,
    Priority,
    ProviderFailure,
    TaskResult,
    TaskType,
)

__all__ = [
    "API_VERSION", "GROUP", "KIND", "PLURAL", "REASONS", "RETRYABLE_REASONS", "VERSION",
    "Artifact", "Condition", "ConditionType", "GenerationTask", "GenerationTaskSpec",
    "GenerationTaskStatus", "ModelRef", "Params", "Phase", "Priority", "ProviderFailure",
    "TaskResult", "TaskType",
    # the model catalog (gentask.domain.catalog)
    "CATALOG", "InvalidSpecError", "ModelRetiredError", "ModelSpec", "Target", "validate_spec",
]
