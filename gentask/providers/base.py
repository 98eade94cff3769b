"""The Provider interface and the data it takes and returns.

A provider turns a GenerationRequest into a GenerationResult. Images and texts take one call,
`generate`. Videos are vendor jobs: `submit` returns the vendor's task id, `poll` reports the
job's state (and its result once it is done), `cancel` stops it. The runner
(gentask.providers.runner) hands the task id to the caller between `submit` and the first
`poll`, so that a worker that restarts can poll the same job instead of paying for a new one.

A provider returns data, never stores it: images and videos come back as bytes or as the
vendor's (expiring) URL, with usage and the vendor's request id.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar

from gentask.domain.catalog import ModelSpec
from gentask.domain.pricing import Attempt
from gentask.domain.task import ModelRef, ProviderFailure, TaskType
from gentask.providers.errors import BadRequestError, ProviderError


@dataclass(frozen=True)
class GenerationRequest:
    """One generation for one (provider, model), with the parameters resolved by the catalog."""

    model: ModelSpec
    prompt: str
    params: Mapping[str, Any] = field(default_factory=dict)
    user_id: str = ""

    @property
    def type(self) -> TaskType:
        """The task type of the model, so that providers can branch on it without the catalog."""
        return self.model.type

    def param(self, name: str) -> Any:
        """A parameter as sent, else the model's catalog default (None when it has neither)."""
        return self.params.get(name, self.model.defaults.get(name))

    def chat_messages(self) -> list[dict[str, str]]:
        """The chat/completions `messages` both Ark and OpenAI take: system prompt, then the user's."""
        messages = []
        if self.params.get("system_prompt"):
            messages.append({"role": "system", "content": self.params["system_prompt"]})
        messages.append({"role": "user", "content": self.prompt})
        return messages


@dataclass
class Media:
    """A produced file: its bytes, or the vendor's URL (which expires), or both."""

    mime_type: str
    data: bytes | None = None
    url: str | None = None
    url_expires_at: datetime | None = None

    def __repr__(self) -> str:
        size = f"{len(self.data)} bytes" if self.data is not None else "no bytes"
        return f"Media({self.mime_type}, {size}, url={'yes' if self.url else 'no'})"


def expires_in(seconds: float) -> datetime:
    """When a vendor URL issued now stops working, for Media.url_expires_at."""
    return datetime.now(UTC) + timedelta(seconds=seconds)


def sniff_mime(data: bytes, default: str = "application/octet-stream") -> str:
    """The MIME type of PNG, JPEG, WebP or MP4 bytes by their magic number; `default` for anything else."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return default


@dataclass
class GenerationResult:
    """What came back, who served it, and what failed before (filled in by the runner)."""

    provider: str
    model: str
    images: list[Media] = field(default_factory=list)
    video: Media | None = None
    text: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    request_id: str | None = None
    provider_task_id: str | None = None
    attempts: int = 1
    failures: list[ProviderFailure] = field(default_factory=list)
    attempt_log: list[Attempt] = field(default_factory=list)     # every vendor attempt (the cost), by the runner

    @property
    def served_by(self) -> ModelRef:
        """The (provider, model) that produced the result, as the task's status.servedBy records it."""
        return ModelRef(provider=self.provider, model=self.model)


class JobState(StrEnum):
    """Where a vendor job is; the runner polls until it is `done`."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        """True once the job has ended, either way: no more polls are needed."""
        return self in (JobState.SUCCEEDED, JobState.FAILED)


@dataclass
class JobStatus:
    """A vendor job's state; `result` when it succeeded, `error` when it failed."""

    state: JobState
    progress: int | None = None
    result: GenerationResult | None = None
    error: ProviderError | None = None


def int_usage(usage: Any) -> dict[str, int]:
    """The vendor's usage numbers (top level only; nested details dropped)."""
    if not isinstance(usage, dict):
        return {}
    return {k: int(v) for k, v in usage.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Provider(abc.ABC):
    """A vendor (or the simulator) behind one provider name of the catalog."""

    name: ClassVar[str]

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """One call: an image or a text."""
        raise self.unsupported(request, "generate")

    async def submit(self, request: GenerationRequest) -> str:
        """Start a vendor job (video); returns the vendor's task id."""
        raise self.unsupported(request, "submit")

    async def poll(self, request: GenerationRequest, task_id: str) -> JobStatus:
        """The state of a job started by `submit` (possibly by another process)."""
        raise self.unsupported(request, "poll")

    async def cancel(self, request: GenerationRequest, task_id: str) -> None:
        """Stop a job; a job that is already finished or gone is not an error."""
        raise self.unsupported(request, "cancel")

    async def aclose(self) -> None:  # noqa: B027 - optional hook: a provider without connections keeps it
        """Release connections; a no-op for providers that hold none."""

    def unsupported(self, request: GenerationRequest, call: str) -> ProviderError:
        """The BadRequestError for a call this provider cannot make for the request's model."""
        return BadRequestError(f"{self.name} cannot {call} a {request.type.value} with {request.model.model}",
                               provider=self.name, model=request.model.model)

    def __repr__(self) -> str:     # never the credentials
        return f"<{type(self).__name__} {self.name}>"
