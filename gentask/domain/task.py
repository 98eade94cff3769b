"""GenerationTask: spec, status and conditions, the single source of truth for the CRD.

`make crds` renders `crds/generationtasks.gentask.io.yaml` from these models
(gentask.domain.crd). Field constraints here become OpenAPI bounds there; `x_kubernetes`
extras become the CRD's x-kubernetes-* keys.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gentask.domain.names import to_camel
from gentask.domain.reasons import REASONS, Phase
from gentask.domain.webhooks import Notification, Notify

GROUP = "gentask.io"
VERSION = "v1alpha1"
KIND = "GenerationTask"
PLURAL = "generationtasks"
SINGULAR = "generationtask"
SHORT_NAMES = ["gt", "gentask"]
API_VERSION = f"{GROUP}/{VERSION}"

PROMPT_MAX = 8000
RETRIES_MAX = 10
TIMEOUT_MIN, TIMEOUT_MAX = 10, 86400
TTL_MAX = 31536000
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class TaskType(str, Enum):  # noqa: UP042 - StrEnum would change what str() of a member prints
    """What a task generates: an image, a video or a text."""

    IMAGE = "image"
    VIDEO = "video"
    TEXT = "text"


class Priority(str, Enum):  # noqa: UP042 - StrEnum would change what str() of a member prints
    """How urgent a task is: the PriorityClass its Job pod gets."""

    CRITICAL = "critical"
    DEFAULT = "default"
    LOW = "low"

    @property
    def priority_class(self) -> str:
        """The PriorityClass of the task's Job pod."""
        return f"gentask-{self.value}"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", use_enum_values=False,
                              alias_generator=to_camel)


class Params(_Model):
    """Per-type knobs; which ones a model accepts, and which values, is the catalog's business."""

    size: str | None = Field(None, pattern=r"^[1-9][0-9]{1,4}x[1-9][0-9]{1,4}$",
                             description="image size WIDTHxHEIGHT, e.g. 1024x1024")
    response_format: Literal["url", "b64_json"] | None = Field(None,
                                                                description="image: how the vendor returns it")
    n: int | None = Field(None, ge=1, le=10, description="image: how many images")
    seed: int | None = Field(None, ge=-1, le=2147483647, description="-1 for random")
    aspect_ratio: str | None = Field(None, pattern=r"^[1-9][0-9]?:[1-9][0-9]?$",
                                     description="video: aspect ratio such as 16:9")
    duration: int | None = Field(None, ge=1, le=60, description="video: seconds")
    resolution: str | None = Field(None, pattern=r"^[0-9]{3,4}p$", description="video: e.g. 720p, 1080p")
    max_tokens: int | None = Field(None, ge=1, le=131072, description="text: token limit")
    temperature: float | None = Field(None, ge=0, le=2, description="text: sampling temperature")
    system_prompt: str | None = Field(None, max_length=PROMPT_MAX,
                                      description="text: system message")


class ModelRef(_Model):
    """A provider and one of its models, e.g. a fallback to try."""

    provider: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL)
    model: str = Field(min_length=1, max_length=128)


class GenerationTaskSpec(_Model):
    """What to generate, with whom, and how hard to try. Immutable after creation except `cancel`."""

    type: TaskType = Field(description="image | video | text")
    provider: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL,
                          description="provider name from the catalog, e.g. volcengine, openai, fake")
    model: str = Field(min_length=1, max_length=128, description="model name from the catalog")
    prompt: str = Field(min_length=1, max_length=PROMPT_MAX)
    user_id: str = Field("", max_length=128, description="the user the task belongs to")
    priority: Priority = Field(Priority.DEFAULT, description="critical | default | low: the Job's PriorityClass")
    params: Params = Field(default_factory=Params)
    fallbacks: list[ModelRef] = Field(default_factory=list, max_length=5,
                                      description="tried in order when retries on the primary are exhausted")
    retries: int = Field(3, ge=0, le=RETRIES_MAX, description="attempts after the first, for retryable errors")
    timeout_seconds: int = Field(600, ge=TIMEOUT_MIN, le=TIMEOUT_MAX,
                                 description="deadline for the whole task")
    ttl_seconds_after_finished: int = Field(86400, ge=0, le=TTL_MAX,
                                            description="the resource is deleted this long after it finishes; "
                                                        "MongoDB keeps the record")
    cancel: bool = Field(False, description="set true to cancel; cannot be unset")
    notify: Notify | None = Field(None, description="webhooks: where to tell about the task's events, signed per "
                                                    "Standard Webhooks, the body a CloudEvent")


class Condition(_Model):
    """A condition as the Kubernetes API conventions define it."""

    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field("", max_length=32768)
    last_transition_time: datetime = Field()
    observed_generation: int | None = Field(None, ge=0)


class Artifact(_Model):
    """A produced file: where the vendor put it (expires) and where we keep it."""

    url: str | None = Field(None, description="the vendor's URL; it expires")
    url_expires_at: datetime | None = None
    artifact: str | None = Field(None, description="name in the artifact store")
    mime_type: str | None = None
    size_bytes: int | None = Field(None, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ProviderFailure(_Model):
    """How one provider/model failed before the task moved on (to a fallback or to Failed)."""

    provider: str
    model: str
    reason: str
    message: str = ""


class Usage(_Model):
    """What a task (or one attempt) consumed: the vendor's numbers where it reports them, else what was produced."""

    images: int | None = Field(None, ge=0, description="images generated")
    input_tokens: int | None = Field(None, ge=0, description="prompt tokens (text, token-billed images)")
    output_tokens: int | None = Field(None, ge=0, description="completion or image output tokens")
    video_seconds: int | None = Field(None, ge=0, description="seconds of video produced")
    video_tokens: int | None = Field(None, ge=0, description="video tokens the vendor billed (Seedance)")


AMOUNT = r"^[0-9]+(\.[0-9]+)?$"
CURRENCY = r"^[A-Z]{3}$"


class Money(_Model):
    """An amount in one currency, as a decimal string (never a float)."""

    amount: str = Field(pattern=AMOUNT, max_length=32, description="decimal string, e.g. 0.259")
    currency: str = Field(pattern=CURRENCY, description="ISO 4217 code: CNY, USD (XTS: the simulator's test money)")


class AttemptCost(_Model):
    """One vendor attempt of a task (a call, or a vendor job) and what it cost."""

    provider: str
    model: str
    outcome: Literal["Succeeded", "Failed"]
    reason: str | None = Field(None, description="why it failed, a word of the reason vocabulary")
    vendor_task_id: str | None = Field(None, description="the vendor's job id (video)")
    usage: Usage = Field(default_factory=Usage)
    amount: str = Field(pattern=AMOUNT, max_length=32, description="what this attempt cost, decimal string")
    currency: str = Field(pattern=CURRENCY)


class Cost(_Model):
    """What a task cost: the total (per currency when attempts were billed in two) and each attempt."""

    amount: str | None = Field(None, pattern=AMOUNT, max_length=32,
                               description="the total, when every charge is in one currency")
    currency: str | None = Field(None, pattern=CURRENCY)
    totals: list[Money] = Field(default_factory=list, max_length=8, description="the total per currency")
    attempts: list[AttemptCost] = Field(default_factory=list, max_length=32,
                                        description="each attempt, in order; a refused one costs 0")


class TaskResult(_Model):
    """What the task produced: references to stored files (never the bytes), the text, usage."""

    images: list[Artifact] = Field(default_factory=list)
    video: Artifact | None = None
    text: str | None = Field(None, max_length=65536, description="the text; a longer one is in textArtifact")
    text_artifact: Artifact | None = None
    usage: Annotated[dict[str, int], Field(default_factory=dict,
                                           description="token or unit counts reported by the vendor")]


class GenerationTaskStatus(_Model):
    """Where the task is: its phase, reason, conditions, attempts, and its result once done."""

    phase: Phase | None = Field(None, description="Pending | Queued | Running | Succeeded | Failed | Cancelled")
    reason: str | None = Field(None, description="one word from the reason vocabulary")
    message: str | None = Field(None, max_length=32768)
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    attempts: int | None = Field(None, ge=0)
    job_name: str | None = None
    worker_pod: str | None = Field(None, description="the pod running the current attempt")
    served_by: ModelRef | None = None
    provider_task_id: str | None = None
    provider_failures: list[ProviderFailure] = Field(default_factory=list)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    result: TaskResult | None = None
    usage: Usage | None = Field(None, description="what the task consumed over all its attempts")
    cost: Cost | None = Field(None, description="what the task cost, by the price table (docs/pricing.md)")
    notifications: list[Notification] = Field(default_factory=list, max_length=8,
                                              description="delivery state of spec.notify's events, one entry an "
                                                          "event (written by the operator)")

    @property
    def finished(self) -> bool:
        """The phase is terminal (Succeeded, Failed or Cancelled): nothing changes any more."""
        return self.phase is not None and self.phase.terminal


class OwnerReference(BaseModel):
    """An object's owner (metadata.ownerReferences): how a Job names its task."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(BaseModel):
    """Kubernetes object metadata: typed where gentask reads it, everything else kept as it came."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    owner_references: list[OwnerReference] = Field(default_factory=list)


class GenerationTask(BaseModel):
    """A whole GenerationTask object: what the operator and the worker parse once and pass on."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", alias_generator=to_camel)
    api_version: Literal["gentask.io/v1alpha1"] = "gentask.io/v1alpha1"     # API_VERSION
    kind: Literal["GenerationTask"] = "GenerationTask"                     # KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: GenerationTaskSpec
    status: GenerationTaskStatus = Field(default_factory=GenerationTaskStatus)

    @property
    def namespace(self) -> str:
        """metadata.namespace (a task read from the API server always has one)."""
        return self.metadata.namespace or ""

    @property
    def name(self) -> str:
        """metadata.name."""
        return self.metadata.name or ""

    @property
    def uid(self) -> str:
        """metadata.uid."""
        return self.metadata.uid or ""

    def to_manifest(self) -> dict[str, Any]:
        """The object as the API server takes it: API field names, no empty metadata, no status before one."""
        body = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        body["metadata"] = {k: v for k, v in body["metadata"].items() if v not in ({}, None, [])}
        if not self.status.phase:
            body.pop("status", None)
        return body


__all__ = [
    "API_VERSION", "GROUP", "KIND", "PLURAL", "REASONS", "SHORT_NAMES", "SINGULAR", "VERSION",
    "Artifact", "AttemptCost", "Condition", "Cost", "GenerationTask", "GenerationTaskSpec", "GenerationTaskStatus",
    "ModelRef", "Money", "ObjectMeta", "OwnerReference", "Params", "Phase", "Priority", "ProviderFailure",
    "TaskResult", "TaskType", "Usage",
]
