"""Phases, condition types and the bounded reason vocabulary of GenerationTask status."""

from __future__ import annotations

from enum import Enum


class Phase(str, Enum):  # noqa: UP042 - StrEnum would change what str() of a member prints
    """Where a task is in its life: Pending, Queued, Running, then Succeeded, Failed or Cancelled."""

    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @classmethod
    def parse(cls, value: str | None) -> Phase | None:
        """The phase named `value`; None for no phase or an unknown word (a status written by someone else)."""
        try:
            return cls(value) if value else None
        except ValueError:
            return None

    @property
    def terminal(self) -> bool:
        """Succeeded, Failed or Cancelled: the task is finished."""
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED)

    @property
    def rank(self) -> int:
        """Order used to never move a record backwards (terminal phases share the top rank)."""
        return {"Pending": 0, "Queued": 1, "Running": 2}.get(self.value, 3)


QUOTA_WAIT = "QuotaWait"


def waits_for_room(phase: str | None, reason: str | None) -> bool:
    """Queued with reason QuotaWait: a GenerationQuota's concurrency limit is reached, so no executor has
    the task yet (no Job, no claim by a pool worker, Scheduled False); the operator admits it when room
    frees (gentask.operator.quota). `phase` may be the Phase or its name as the API shows it."""
    return reason == QUOTA_WAIT and phase == Phase.QUEUED


class ConditionType(str, Enum):  # noqa: UP042 - StrEnum would change str() of members others print
    """The condition types a task's status carries (Kubernetes API conventions)."""

    ACCEPTED = "Accepted"        # the spec passed the catalog's validation
    SCHEDULED = "Scheduled"      # a Job (or the inline executor) has the task
    RUNNING = "Running"          # a worker is calling the provider
    SUCCEEDED = "Succeeded"      # terminal outcome: True, False (failed) or False (cancelled)
    ARCHIVED = "Archived"        # mirrored into MongoDB


# Every reason a status or condition may carry, with what it means. The CRD lists them as an enum.
REASONS: dict[str, str] = {
    "Created": "the task was accepted by the API server and waits for the operator",
    "NamespaceNotEnabled": "the task's namespace is not a gentask tenant (not labelled or listed); it waits",
    "CredentialsMissing": "the namespace has no credentials Secret (or it lacks MONGO_URL); the task waits",
    "ProviderNotConfigured": "the namespace's credentials Secret lacks the key the task's provider needs; it waits",
    "QuotaWait": "a GenerationQuota's concurrency limit is reached; the task waits and starts when room frees",
    "Validated": "the spec passed the model catalog's validation",
    "JobCreated": "the task's Job exists and waits for a node",
    "Started": "a worker started calling the provider",
    "Retrying": "an attempt failed with a retryable error; another attempt follows",
    "Completed": "the provider returned a result and the artifacts are stored",
    "InvalidSpec": "the spec names an unknown model or a parameter the model does not accept",
    "ModelRetired": "the model was retired by its vendor; the message names its successor",
    "ModelUnavailable": "the vendor does not serve this model for this account",
    "ProviderRateLimited": "the vendor kept answering rate limited until the retries ran out",
    "ProviderOverloaded": "the vendor kept answering overloaded or 5xx until the retries ran out",
    "ProviderTimeout": "the vendor did not answer within AI_TIMEOUT until the retries ran out",
    "ProviderUnreachable": "the vendor could not be reached until the retries ran out",
    "ProviderBadRequest": "the vendor refused the request as malformed",
    "ContentRejected": "the vendor's safety system refused the prompt or the output",
    "AuthenticationFailed": "the vendor refused the credentials",
    "QuotaExceeded": "the vendor account has no quota or is in arrears, or a GenerationQuota's tasks a day or cost "
                     "a month would be exceeded (the message names it and what is left); no vendor call was made",
    "ProviderError": "the vendor failed in a way not classified above",
    "DeadlineExceeded": "the task ran longer than spec.timeoutSeconds",
    "BackoffLimitExceeded": "every attempt failed",
    "PodLost": "the task's pod disappeared or was evicted",
    "JobDeleted": "the task's Job was deleted by someone else",
    "Cancelled": "spec.cancel was set",
    "InternalError": "gentask itself failed; the message says where",
}

RETRYABLE_REASONS = frozenset({"ProviderRateLimited", "ProviderOverloaded", "ProviderTimeout", "ProviderUnreachable"})
