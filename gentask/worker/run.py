"""What a Job pod runs: load one task, call the provider, keep the files, write the status.

    gentask worker run NAMESPACE/NAME

Retries and fallbacks on provider errors happen here, in-process (spec.retries, backoff with
jitter, Retry-After), so a task that fails for good exits EXIT_PERMANENT and the Job's
podFailurePolicy stops at once. EXIT_RETRY is for trouble around the provider (the API server
or the artifact store unreachable): the Job then starts another pod (backoffLimit =
spec.retries). An asynchronous vendor job's id is written to the status before it is polled,
so a pod that starts again resumes that job instead of paying for a second one; artifacts are
named by task uid and attempt and stored once, so a second pod for the same attempt stores
nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gentask.config import Settings
from gentask.domain.catalog import InvalidSpecError, ModelRetiredError
from gentask.domain.names import to_snake
from gentask.domain.pricing import Attempt, task_cost
from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask, GenerationTaskSpec, GenerationTaskStatus, ModelRef
from gentask.kube.client import KubeClient
from gentask.kube.conditions import utc_now
from gentask.kube.errors import KubeError
from gentask.kube.names import EXIT_OK, EXIT_PERMANENT, EXIT_RETRY
from gentask.kube.status import status_patch, transition
from gentask.providers import GenerationFailed, ProviderError, Registry, RetryPolicy, Submitted, generate
from gentask.providers.base import GenerationResult, Media
from gentask.providers.download import fetch

if TYPE_CHECKING:
    from gentask.storage import ArtifactStore

log = logging.getLogger("gentask.worker")

TEXT_INLINE_MAX = 65536
PROGRESS_EVERY = 10.0
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4",
              "image/gif": "gif", "text/plain": "txt"}


def _storage_unavailable() -> type[Exception]:
    """gentask.storage.StorageUnavailable, imported when an error is being matched: a task that
    stores no file (a text) never imports pymongo (an `except` clause is evaluated only then)."""
    from gentask.storage import StorageUnavailable
    return StorageUnavailable


class Worker:
    """One task in one process: claim it, generate, store the files, write the outcome."""

    def __init__(self, kube: KubeClient, settings: Settings, registry: Registry,
                 store: ArtifactStore | Callable[[], ArtifactStore | None] | None,
                 pod_name: str, policy: RetryPolicy | None = None) -> None:
        """`store`: the artifact store, or a function that connects it on the first file to keep."""
        self.kube = kube
        self.settings = settings
        self.registry = registry
        self._store_or_factory = store
        self.pod = pod_name
        self.policy = policy or RetryPolicy.from_settings(settings)
        self.prices = settings.price_table()
        self._last_progress = 0.0
        self.reads_by_patch = False
        self._progress_writes: set[asyncio.Task[None]] = set()

    async def _note_progress(self, namespace: str, name: str, message: str) -> None:
        try:
            await self._patch(namespace, name, GenerationTaskStatus(message=message))
        except KubeError:
            pass     # progress is information; the next one may get through

    async def _patch(self, ns: str, name: str, status: GenerationTaskStatus, rv: str | None = None) -> GenerationTask:
        return GenerationTask.model_validate(await self._patch_raw(ns, name, status, rv))

    async def _patch_raw(self, ns: str, name: str, status: GenerationTaskStatus, rv: str | None = None
                         ) -> dict[str, Any]:
        """The status write; the task as the API server answers it."""
        patch = status_patch(status)
        cost = patch.get("cost")
        if isinstance(cost, dict) and "amount" not in cost:     # two currencies: a merge patch must drop the
            cost.update(amount=None, currency=None)             # single total an earlier pod may have written
        return await self.kube.patch_task_status(ns, name, patch, rv)

    async def run(self, namespace: str, name: str, queued: GenerationTask | None = None) -> int:
        """Run the task NAMESPACE/NAME; the exit code tells the Job what to do next.

        `queued`: the task as the operator queued it, which a Job's pod carries (its worker may not
        get tasks); without it the task is read first."""
        if queued is not None:
            self.reads_by_patch = True
            task = queued
        else:
            try:
                task = await self._read(namespace, name)
            except KubeError as exc:
                if exc.not_found:
                    log.info("task is gone; nothing to do", extra={"task": f"{namespace}/{name}"})
                    return EXIT_OK
                if exc.status == 0:
                    raise           # no answer at all: the caller reports the attempt and exits "retry"
                log.error("cannot read the task: %s", exc.reason, extra={"task": f"{namespace}/{name}"})
                return EXIT_RETRY
        phase = task.status.phase
        if task.status.finished or task.spec.cancel:
            log.info("task already finished or cancelled",
                     extra={"task": name, "phase": phase.value if phase else None})
            return EXIT_OK
        try:
            task = await self._claim(task)
        except KubeError as exc:
            if not exc.not_found:
                raise
            log.info("task is gone; nothing to do", extra={"task": f"{namespace}/{name}"})
            return EXIT_OK
        if task.status.finished or task.spec.cancel:     # found so when a stale claim made it read again
            return EXIT_OK
        return await self._generate(task)

    async def _read(self, namespace: str, name: str) -> GenerationTask:
        """The task as it is now. A worker pod's token may not get tasks: it reads through an empty
        status patch (no change, no write), which the admission policy allows for its own task only."""
        if self.reads_by_patch:
            return GenerationTask.model_validate(await self.kube.touch_task_status(namespace, name))
        return GenerationTask.model_validate(await self.kube.get_task(namespace, name))

    async def _claim(self, task: GenerationTask) -> GenerationTask:
        """Mark the task Running for this pod's attempt (optimistic concurrency on resourceVersion)."""
        for _ in range(5):
            status = task.status
            # The previous worker never reported a failure (its pod was lost, evicted, or this very
            # pod restarted): carry on with its attempt instead of spending a new one.
            same_attempt = status.phase is Phase.RUNNING and status.reason == "Started"
            attempt = (status.attempts or 0) + (0 if same_attempt else 1)
            update = transition(task, Phase.RUNNING, "Started", f"attempt {attempt} running on pod {self.pod}",
                                attempts=attempt, worker_pod=self.pod, start_time=status.start_time or utc_now())
            try:
                return await self._patch(task.namespace, task.name, update, task.metadata.resource_version)
            except KubeError as exc:
                if not exc.conflict:
                    raise
                task = await self._read(task.namespace, task.name)
                if task.status.finished or task.spec.cancel:
                    return task
        raise RuntimeError("could not claim the task: it kept changing")

    def _remaining(self, spec: GenerationTaskSpec, status: GenerationTaskStatus) -> float:
        started = status.start_time or datetime.now(UTC)
        return spec.timeout_seconds - (datetime.now(UTC) - started).total_seconds()

    async def _generate(self, task: GenerationTask) -> int:
        ns, name = task.namespace, task.name
        spec, status = task.spec, task.status
        current = {"task": task}

        async def on_submitted(sub: Submitted) -> None:
            current["task"] = await self._patch(ns, name, GenerationTaskStatus(
                served_by=ModelRef(provider=sub.provider, model=sub.model), provider_task_id=sub.task_id,
                message=f"vendor job {sub.task_id} submitted to {sub.provider}/{sub.model}"))
            log.info("vendor job submitted", extra={"task": name, "provider": sub.provider, "vendor_task": sub.task_id})

        def on_progress(progress: Any) -> None:
            log.info("progress: %s", progress.state, extra={"task": name, "provider": progress.provider,
                                                           "percent": progress.percent, "detail": progress.message})
            if time.monotonic() - self._last_progress >= PROGRESS_EVERY and progress.state in ("queued", "running"):
                self._last_progress = time.monotonic()
                pct = f" {progress.percent}%" if progress.percent is not None else ""
                message = f"vendor job {progress.state}{pct} after {progress.elapsed:.0f}s"
                # off the event loop: the inline executor runs other tasks on it meanwhile
                pending = asyncio.get_running_loop().create_task(self._note_progress(ns, name, message))
                self._progress_writes.add(pending)
                pending.add_done_callback(self._progress_writes.discard)

        try:
            try:
                result = await generate(spec, registry=self.registry, policy=self.policy,
                                        resume=Submitted.from_status(status), on_submitted=on_submitted,
                                        on_progress=on_progress, deadline=self._remaining(spec, status))
            finally:   # a progress note must never land after the final status
                await asyncio.gather(*self._progress_writes, return_exceptions=True)
        except InvalidSpecError as exc:          # refused before any vendor call: it costs nothing
            reason = "ModelRetired" if isinstance(exc, ModelRetiredError) else "InvalidSpec"
            await self._fail(current["task"], reason, str(exc), **self._cost(task, []))
            return EXIT_PERMANENT
        except GenerationFailed as exc:
            await self._fail(current["task"], exc.reason, str(exc.error), provider_failures=list(exc.failures),
                             **self._cost(task, exc.attempts))
            return EXIT_PERMANENT
        try:
            stored = await self._store(task.uid, (status.attempts or 1), result)
        except _storage_unavailable() as exc:     # the vendor billed this result: the next pod's cost adds to it
            await self.report_retry(ns, name, f"artifact store unavailable: {exc}",
                                    **self._cost(task, result.attempt_log))
            return EXIT_RETRY
        except ProviderError as exc:              # produced and billed, but lost: it still costs
            await self._fail(current["task"], exc.reason, f"could not download the result: {exc}",
                             **self._cost(task, result.attempt_log))
            return EXIT_PERMANENT
        extra: dict[str, Any] = {"provider_task_id": result.provider_task_id} if result.provider_task_id else {}
        done = transition(current["task"], Phase.SUCCEEDED, "Completed",
                          f"served by {result.provider}/{result.model}",
                          served_by=ModelRef(provider=result.provider, model=result.model),
                          provider_failures=list(result.failures), result=stored,
                          **self._cost(task, result.attempt_log), **extra)
        await self._patch(ns, name, done)
        log.info("task succeeded", extra={"task": name, "provider": result.provider, "model": result.model})
        return EXIT_OK

    def _cost(self, task: GenerationTask, attempts: list[Attempt]) -> dict[str, Any]:
        """status.usage and status.cost: what earlier pods of the task were billed, then these attempts."""
        earlier = [Attempt(a.provider, a.model, a.outcome == "Succeeded",
                           {to_snake(k): v for k, v in a.usage.model_dump(by_alias=True, exclude_none=True).items()},
                           reason=a.reason, vendor_task_id=a.vendor_task_id)
                   for a in (task.status.cost.attempts if task.status.cost is not None else [])]
        return task_cost([*earlier, *attempts], self.prices, primary=(task.spec.provider, task.spec.model))

    async def report_retry(self, namespace: str, name: str, message: str, **fields: Any) -> None:
        """Best effort: say why this attempt ends, so the next one counts as a new attempt."""
        try:
            await self._patch(namespace, name, GenerationTaskStatus.model_validate(
                {"reason": "Retrying", "message": message[:32768], **fields}))
        except Exception:  # noqa: BLE001 - the API server may be what failed
            log.warning("could not report the failed attempt", extra={"task": name})

    async def _fail(self, task: GenerationTask, reason: str, message: str, **fields: Any) -> None:
        await self._patch(task.namespace, task.name, transition(task, Phase.FAILED, reason, message, **fields))
        log.warning("task failed", extra={"task": task.name, "reason": reason, "detail": message})

    async def _store(self, uid: str, attempt: int, result: GenerationResult) -> dict[str, Any]:
        """Copy every produced file into the artifact store; the status result references them."""
        out: dict[str, Any] = {"usage": result.usage}
        files: list[tuple[str, Media]] = [(f"image-{i}", m) for i, m in enumerate(result.images)]
        if result.video is not None:
            files.append(("video", result.video))
        refs = []
        for stem, media in files:
            data = await fetch(media, policy=self.policy, provider=result.provider, model=result.model)
            refs.append(await self._put(uid, attempt, stem, data, media.mime_type, media))
        if result.images:
            out["images"] = refs[: len(result.images)]
        if result.video is not None:
            out["video"] = refs[-1]
        if result.text is not None:
            encoded = result.text.encode()
            if len(encoded) <= TEXT_INLINE_MAX:
                out["text"] = result.text
            else:
                out["text"] = result.text[:1000] + "…"
                out["textArtifact"] = await self._put(uid, attempt, "text", encoded, "text/plain", Media("text/plain"))
        return out

    @property
    def store(self) -> ArtifactStore | None:
        """The artifact store, connected on first use when a factory was given."""
        if callable(self._store_or_factory):
            self._store_or_factory = self._store_or_factory()
        return self._store_or_factory

    async def _put(self, uid: str, attempt: int, stem: str, data: bytes, mime: str, media: Media) -> dict[str, Any]:
        store = await asyncio.to_thread(lambda: self.store)
        if store is None:
            raise _storage_unavailable()("no artifact store is configured (MONGO_URL)")
        name = f"{uid}/{attempt}/{stem}.{EXTENSIONS.get(mime, 'bin')}"
        ref = await asyncio.to_thread(store.put, name, data, mime_type=mime, task_uid=uid)
        entry: dict[str, Any] = {"artifact": ref.name, "mimeType": ref.mime_type, "sizeBytes": ref.size_bytes,
                                 "sha256": ref.sha256}
        if media.url:
            entry["url"] = media.url
            if media.url_expires_at:
                entry["urlExpiresAt"] = media.url_expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return entry
