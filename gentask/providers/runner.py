"""generate(): a GenerationTask's provider work, from spec to result.

    result = await generate(spec, registry=registry, policy=RetryPolicy.from_settings(settings),
                            resume=Submitted.from_status(status), on_submitted=save_task_id)

1. The catalog validates the spec (InvalidSpecError / ModelRetiredError before any call).
2. Targets are tried in order, the primary then each fallback. On each, a call is retried while
   its error is retryable, up to spec.retries times (backoff with jitter, Retry-After bounded),
   each call under one AI_TIMEOUT. When retries run out on a retryable error the next target is
   tried; a permanent error ends the run at once.
3. Videos are vendor jobs: submit, then `on_submitted(Submitted(provider, model, task_id))` is
   awaited *before* the first poll, so the caller can record the vendor's task id (the worker
   writes status.servedBy and status.providerTaskID). A worker that restarts passes that record
   back as `resume=` and the runner polls the same job instead of submitting a second one. A job
   that ends failed with a retryable error is submitted again (within spec.retries), and the new
   id goes through `on_submitted` again.
4. The whole run is bounded by spec.timeoutSeconds (DeadlineExceeded); a vendor job still
   running then is cancelled.

The result says who served it (`served_by`) and what failed before (`failures`); when every
target failed, GenerationFailed carries the last error's reason and the same failure list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gentask.domain.catalog import ModelSpec, Target, lookup, validate_spec
from gentask.domain.pricing import Attempt, normalize_usage
from gentask.domain.task import GenerationTaskSpec, ProviderFailure
from gentask.providers.base import GenerationRequest, GenerationResult, JobState, JobStatus, Provider
from gentask.providers.errors import DeadlineExceededError, ProviderError
from gentask.providers.registry import Registry
from gentask.providers.retry import RetryPolicy, call_with_retries

log = logging.getLogger("gentask.providers")

CANCEL_TIMEOUT = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class Submitted:
    """A vendor job in flight: enough to poll it again from another process."""

    provider: str
    model: str
    task_id: str

    @classmethod
    def from_status(cls, status: Any) -> Submitted | None:
        """From a GenerationTaskStatus with servedBy and providerTaskID set; None otherwise."""
        served_by = getattr(status, "served_by", None)
        task_id = getattr(status, "provider_task_id", None)
        if served_by is None or not task_id:
            return None
        return cls(served_by.provider, served_by.model, task_id)


@dataclass(frozen=True)
class Progress:
    """What the runner is doing, for progress displays and logs."""

    provider: str
    model: str
    state: str                  # submitted | queued | running | retrying | resubmitting | failing-over
    task_id: str | None = None
    percent: int | None = None
    elapsed: float = 0.0
    message: str = ""


class GenerationFailed(Exception):
    """Every target failed, or one failed for good. `reason` is a word of REASONS."""

    def __init__(self, error: ProviderError, failures: list[ProviderFailure],
                 attempts: list[Attempt] | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.failures = failures
        self.attempts = attempts or []      # every vendor attempt, with what the vendor billed

    @property
    def reason(self) -> str:
        """The last error's reason, which the task's status reports."""
        return self.error.reason

    @property
    def retryable(self) -> bool:
        """Whether the last error was transient: the worker may run the task again later."""
        return self.error.retryable


SubmittedHook = Callable[[Submitted], Awaitable[None] | None]
ProgressHook = Callable[[Progress], None]


class _Run:
    def __init__(self, spec: GenerationTaskSpec, registry: Registry, policy: RetryPolicy,
                 on_submitted: SubmittedHook | None, on_progress: ProgressHook | None) -> None:
        self.spec = spec
        self.registry = registry
        self.policy = policy
        self.on_submitted = on_submitted
        self.on_progress = on_progress
        self.started = time.monotonic()
        self.failures: list[ProviderFailure] = []
        self.in_flight: tuple[Provider, GenerationRequest, str] | None = None
        self.current: ModelSpec | None = None          # the target being tried
        self.attempts: list[Attempt] = []               # what each vendor attempt consumed (the cost)

    def produced(self, request: GenerationRequest, result: GenerationResult) -> None:
        """Record a vendor attempt that produced a result: its usage, as reported or as produced."""
        words = None
        if result.text is not None:
            words = (len(request.prompt.split()), len(result.text.split()))
        seconds = None
        if result.video is not None:       # the length asked for, or the one the model always makes
            seconds = request.param("duration") or request.model.options.get("video_seconds")
        usage = normalize_usage(request.type, result.usage, images=len(result.images),
                                video_seconds=int(seconds) if seconds is not None else None, words=words)
        self.attempts.append(Attempt(request.model.provider, request.model.model, True, usage,
                                     vendor_task_id=result.provider_task_id, size=request.param("size")))

    def refused(self, error: ProviderError, request: GenerationRequest | None = None,
                vendor_task_id: str | None = None) -> None:
        """Record a failed vendor attempt: nothing is charged unless the vendor reported usage (a job that ran)."""
        if error.attempt_recorded:
            return
        error.attempt_recorded = True
        usage: dict[str, int] = {}
        model = request.model if request is not None else (lookup(error.provider or "", error.model or "")
                                                           or self.current)
        if error.usage and model is not None:
            usage = normalize_usage(model.type, error.usage)
        provider = model.provider if model is not None else error.provider or ""
        name = model.model if model is not None else error.model or ""
        self.attempts.append(Attempt(provider, name, False, usage, reason=error.reason,
                                     vendor_task_id=vendor_task_id,
                                     size=request.param("size") if request is not None else None))

    def notify(self, request: GenerationRequest, state: str, **kw: Any) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(request.model.provider, request.model.model, state,
                                      elapsed=time.monotonic() - self.started, **kw))

    async def target(self, target: Target, task_id: str | None) -> GenerationResult:
        self.current = target.model
        provider = self.registry.get(target.provider)
        request = GenerationRequest(target.model, self.spec.prompt, target.params, self.spec.user_id)
        if target.model.asynchronous:
            return await self.job(provider, request, task_id)
        result, attempts = await self.call(provider, request, lambda: provider.generate(request))
        result.attempts = attempts
        self.produced(request, result)
        return result

    async def call(self, provider: Provider, request: GenerationRequest,
                   call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        def retrying(error: ProviderError, retry: int, wait: float) -> None:
            self.notify(request, "retrying", message=f"{error.reason}, retry {retry} in {wait:.2f}s")
        return await call_with_retries(call, self.policy, provider=provider.name, model=request.model.model,
                                       on_retry=retrying)

    async def job(self, provider: Provider, request: GenerationRequest, task_id: str | None) -> GenerationResult:
        model = request.model.model
        calls = failed_jobs = 0
        while True:
            submitted = task_id is None
            if task_id is None:
                job_id, n = await self.call(provider, request, lambda: provider.submit(request))
                calls += n
            else:
                job_id = task_id
            self.in_flight = (provider, request, job_id)
            if submitted:
                hook = self.on_submitted(Submitted(provider.name, model, job_id)) if self.on_submitted else None
                if inspect.isawaitable(hook):
                    await hook
                self.notify(request, "submitted", task_id=job_id)
            status = await self.wait(provider, request, job_id)
            self.in_flight = None
            if status.state is JobState.SUCCEEDED and status.result is not None:
                status.result.provider_task_id = job_id
                status.result.attempts = max(1, calls)
                self.produced(request, status.result)
                return status.result
            error = status.error or ProviderError("the vendor job failed without an error")
            error.provider, error.model = error.provider or provider.name, error.model or model
            self.refused(error, request, job_id)      # a job that ran: what the vendor reports it billed
            failed_jobs += 1
            if not error.retryable or failed_jobs > self.policy.retries:
                raise error
            self.notify(request, "resubmitting", task_id=job_id, message=f"job failed: {error.reason}")
            await asyncio.sleep(self.policy.delay(failed_jobs, error))
            task_id = None

    async def wait(self, provider: Provider, request: GenerationRequest, task_id: str) -> JobStatus:
        """Poll until the job is done; a poll that fails is retried like any call, not resubmitted."""
        while True:
            status, _ = await self.call(provider, request, lambda: provider.poll(request, task_id))
            if status.state.done:
                return status
            self.notify(request, status.state.value, task_id=task_id, percent=status.progress)
            await asyncio.sleep(self.policy.poll_interval)

    async def cancel_in_flight(self) -> None:
        if self.in_flight is None:
            return
        provider, request, task_id = self.in_flight
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await provider.cancel(request, task_id)
        except (ProviderError, TimeoutError) as exc:
            log.warning("could not cancel the vendor job", extra={"provider": provider.name, "task_id": task_id,
                                                                  "error": str(exc)})


async def generate(spec: GenerationTaskSpec, *, registry: Registry, policy: RetryPolicy | None = None,
                   resume: Submitted | None = None, on_submitted: SubmittedHook | None = None,
                   on_progress: ProgressHook | None = None, deadline: float | None = None) -> GenerationResult:
    """Run a task's generation with retries and fallbacks; see the module docstring.

    `deadline` is the seconds left for the task (default spec.timeoutSeconds; a restarted worker
    passes what remains since status.startTime). Raises InvalidSpecError (ModelRetiredError) for a
    spec the catalog refuses, GenerationFailed when no target produced a result.
    `policy.retries` is replaced by spec.retries.
    """
    targets = validate_spec(spec, enabled=registry.names())
    policy = dataclasses.replace(policy or RetryPolicy(), retries=spec.retries)
    run = _Run(spec, registry, policy, on_submitted, on_progress)
    start, task_id = 0, None
    if resume is not None:
        keys = [(t.provider, t.model.model) for t in targets]
        if (resume.provider, resume.model) in keys:
            start, task_id = keys.index((resume.provider, resume.model)), resume.task_id
        else:
            log.warning("the job to resume is not one of the task's targets; starting afresh",
                        extra={"provider": resume.provider, "model": resume.model})
    try:
        async with asyncio.timeout(spec.timeout_seconds if deadline is None else max(0.0, deadline)):
            for index in range(start, len(targets)):
                try:
                    result = await run.target(targets[index], task_id if index == start else None)
                except ProviderError as error:
                    run.failures.append(error.failure())
                    run.refused(error)
                    if not error.retryable or index == len(targets) - 1:
                        raise GenerationFailed(error, run.failures, run.attempts) from None
                    log.warning("provider failed, trying the next fallback", extra={
                        "provider": error.provider, "model": error.model, "reason": error.reason})
                    continue
                result.failures = run.failures
                result.attempt_log = run.attempts
                return result
    except TimeoutError:
        await run.cancel_in_flight()
        deadline_error = DeadlineExceededError(
            f"the task ran longer than timeoutSeconds={spec.timeout_seconds}",
            provider=run.current.provider if run.current else None, model=run.current.model if run.current else None)
        run.failures.append(deadline_error.failure())
        run.refused(deadline_error)
        raise GenerationFailed(deadline_error, run.failures, run.attempts) from None
    raise AssertionError("unreachable: validate_spec returns at least one target")


async def cancel_job(submitted: Submitted, *, registry: Registry) -> None:
    """Cancel a vendor job recorded in a task's status (spec.cancel); a finished job is left alone."""
    entry = lookup(submitted.provider, submitted.model)
    if entry is None:
        raise ValueError(f"unknown model {submitted.provider}/{submitted.model}")
    await registry.get(submitted.provider).cancel(GenerationRequest(entry, ""), submitted.task_id)
