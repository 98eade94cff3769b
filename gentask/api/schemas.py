"""Request and response bodies of the REST API, as the OpenAPI document shows them.

The request fields are the old server's (prompt, user_id, provider, model; size, aspect_ratio,
max_tokens, temperature, seed) plus gentask's own (priority, response_format, n, duration,
resolution, system_prompt, fallbacks, timeout, retries, ttl_seconds_after_finished). Unknown
fields are ignored, as the old server ignored them. Which parameters and values a model takes
is the catalog's business (gentask.domain.catalog); the bounds here are the resource's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from gentask.domain.task import PROMPT_MAX, RETRIES_MAX, TIMEOUT_MAX, TIMEOUT_MIN, TTL_MAX, Priority
from gentask.domain.webhooks import URL_MAX, NotifyEvent

T = TypeVar("T")

OldStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
PhaseName = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"]


# --- requests -------------------------------------------------------------------------------


class ModelChoice(BaseModel):
    """A provider and model, as in a fallback."""

    model_config = ConfigDict(extra="ignore")
    provider: str = Field(min_length=1, max_length=63, description="provider name, e.g. volcengine, openai, fake")
    model: str = Field(min_length=1, max_length=128, description="model name from GET /api/v1/ai/models")


class TaskRequest(BaseModel):
    """Fields every task type takes."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX, description="what to generate")
    user_id: str | None = Field(None, min_length=1, max_length=128,
                                description="owner of the task; must be the caller's user unless the caller is "
                                            "admin; defaults to the caller (required when authentication is off)")
    provider: str = Field(min_length=1, max_length=63, description="provider name (no default)")
    model: str = Field(min_length=1, max_length=128, description="model name (no default)")
    priority: Priority = Field(Priority.DEFAULT, description="critical | default | low")
    fallbacks: list[ModelChoice] = Field(default_factory=list, max_length=5,
                                         description="tried in order when the primary keeps failing")
    timeout: int | None = Field(None, ge=TIMEOUT_MIN, le=TIMEOUT_MAX,
                                description="seconds for the whole task (default 600)")
    retries: int | None = Field(None, ge=0, le=RETRIES_MAX,
                                description="attempts after the first, for retryable errors (default 3)")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=TTL_MAX,
                                                   description="the resource is deleted this long after it "
                                                               "finishes (default 86400); the history keeps it")
    callback_url: str | None = Field(None, min_length=1, max_length=URL_MAX,
                                     description="webhook receiver (the name Volcengine Ark uses): an http(s) URL "
                                                 "told about the task's events, a CloudEvent signed per Standard "
                                                 "Webhooks; private, loopback and link-local addresses are refused")
    callback_events: list[NotifyEvent] | None = Field(None, min_length=1, max_length=6,
                                                      description="which events to send to callback_url: queued, "
                                                                  "running, progress, succeeded, failed, cancelled "
                                                                  "(default: succeeded, failed, cancelled)")

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return {}


class ImageTaskRequest(TaskRequest):
    """POST /api/v1/ai/image/task: the common fields and the image parameters."""

    size: str | None = Field(None, max_length=16, description="WIDTHxHEIGHT, e.g. 1024x1024")
    response_format: Literal["url", "b64_json"] | None = Field(None, description="how the vendor returns the image")
    n: int | None = Field(None, ge=1, le=10, description="how many images")
    seed: int | None = Field(None, ge=-1, le=2147483647, description="-1 for random")

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return self.model_dump(include={"size", "response_format", "n", "seed"}, exclude_none=True)


class VideoTaskRequest(TaskRequest):
    """POST /api/v1/ai/video/task: the common fields and the video parameters."""

    aspect_ratio: str | None = Field(None, max_length=8, description="e.g. 16:9")
    duration: int | None = Field(None, ge=1, le=60, description="seconds")
    resolution: str | None = Field(None, max_length=8, description="e.g. 720p, 1080p")
    seed: int | None = Field(None, ge=-1, le=2147483647, description="-1 for random")

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return self.model_dump(include={"aspect_ratio", "duration", "resolution", "seed"}, exclude_none=True)


class TextTaskRequest(TaskRequest):
    """POST /api/v1/ai/text/task: the common fields and the text parameters."""

    max_tokens: int | None = Field(None, ge=1, le=131072, description="token limit of the answer")
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature")
    system_prompt: str | None = Field(None, max_length=PROMPT_MAX, description="system message")

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return self.model_dump(include={"max_tokens", "temperature", "system_prompt"}, exclude_none=True)


# --- responses ------------------------------------------------------------------------------


class Envelope(BaseModel, Generic[T]):
    """The old server's envelope of every answer: {success, data, message}."""

    success: bool = True
    data: T | None = None
    message: str = ""


class FieldError(BaseModel):
    """One invalid field of a request: its name, the value given and what would be accepted."""

    field: str = Field(description="the request field, e.g. size or fallbacks[0].model")
    value: Any = Field(None, description="the value given")
    accepted: str = Field(description="what would be accepted")
    message: str = ""


class ErrorEnvelope(BaseModel):
    """The envelope of every failure: success false, no data, a message, maybe field errors."""

    success: Literal[False] = False
    data: None = None
    message: str
    errors: list[FieldError] | None = Field(None, description="one entry per invalid field (400 and 422)")


class ArtifactLink(BaseModel):
    """A stored file of a task, with its download link on this API."""

    name: str = Field(description="file name of the artifact, e.g. image-0.png")
    url: str = Field(description="download link on this API (needs the API key)")
    kind: Literal["image", "video", "text"]
    mime_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    source_url: str | None = Field(None, description="the vendor's URL; it expires")


class TaskResultView(BaseModel):
    """What a task produced, as the old server gave it, plus the stored files."""

    image_url: str | None = Field(None, description="the first image: the vendor's URL, else the artifact link")
    image_urls: list[str] = Field(default_factory=list)
    video_url: str | None = None
    text_result: str | None = None
    artifacts: list[ArtifactLink] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)


class ModelRefView(BaseModel):
    """A provider and model in a view (served_by, fallbacks)."""

    provider: str
    model: str


class TaskView(BaseModel):
    """A task as clients see it: what was asked, the phase and its old status word, the result."""

    task_id: str = Field(description="the GenerationTask's name")
    user_id: str
    type: str
    provider: str
    model: str
    prompt: str
    priority: str
    status: OldStatus = Field(description="the old server's word for the phase")
    phase: PhaseName = Field(description="Pending | Queued | Running | Succeeded | Failed | Cancelled")
    reason: str | None = None
    message: str | None = None
    error: str | None = Field(None, description="why it failed, when it failed")
    attempts: int = 0
    served_by: ModelRefView | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[ModelRefView] = Field(default_factory=list)
    cancel_requested: bool = False
    result: TaskResultView | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


class TaskPage(BaseModel):
    """One page of a user's tasks, newest first, and how many there are in all."""

    tasks: list[TaskView]
    total: int
    limit: int
    offset: int


class DeletedTask(BaseModel):
    """The answer to a delete."""

    task_id: str
    deleted: bool = True


class ModelView(BaseModel):
    """One catalog entry: a provider's model, its task type and parameters."""

    provider: str
    model: str
    type: str
    parameters: dict[str, str] = Field(description="parameter -> accepted values")
    defaults: dict[str, Any]
    enabled: bool = Field(description="the provider is enabled on this server (GENTASK_PROVIDERS)")
    retired: str | None = None
    successor: str | None = None
    note: str = ""


class ModelList(BaseModel):
    """The model catalog, filtered as asked."""

    models: list[ModelView]


class Readiness(BaseModel):
    """What /readyz found: the cluster watch, MongoDB, the tasks watched."""

    cluster: str
    mongodb: str
    tasks_watched: int
