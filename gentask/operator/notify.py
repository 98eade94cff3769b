"""Webhook deliveries (spec.notify): the operator tells each task's receiver about its events.

The operator, not the worker, delivers: it sees every transition. Level-triggered like the rest
of the operator. Which events happened is read from the task's status
(gentask.domain.webhooks.due_events); what was delivered is status.notifications, written by the
operator only. So a restarted operator sees the same events with the same ids (the watch lists
unfinished tasks, the audit at start pages through the finished ones) and sends again only what
no receiver acknowledged.

Per task with pending events, one asyncio task: it reads the task (the status is the truth, not
what an older watch event showed), sends every event that is due (Standard Webhooks signature,
CloudEvents body), writes the outcome to status.notifications (a merge patch of that field only,
so it never touches what the worker writes), then sleeps until the next retry is due or the
task changes. Retries: timeouts, connection errors, 5xx and 429 (Retry-After honoured), with
exponential backoff and jitter, until the event is GENTASK_WEBHOOK_HORIZON old. Another answer,
a receiver whose address may not be called, or the horizon: the event is Failed, with a Warning
Event on the task. The signing key comes from the Secret spec.notify.secretRef names, else
GENTASK_WEBHOOK_SIGNING_KEY; it is read for each attempt and never written anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gentask.domain.task import GenerationTask
from gentask.domain.webhooks import (
    CallbackRefused,
    DueEvent,
    Notification,
    SigningKeyError,
    cloud_event,
    due_events,
    error_text,
    parse_keys,
    sign,
)
from gentask.kube.errors import KubeError
from gentask.webhooks.address import Unresolved, policy_of, vet

if TYPE_CHECKING:
    from gentask.operator.context import OperatorContext
    from gentask.webhooks.sender import WebhookSender

log = logging.getLogger("gentask.operator.notify")

ERROR_PAUSE = 5.0       # after the API server failed a read or a write, the loop tries again this much later


class KeyProblem(Exception):
    """No usable signing key (the message names where it was looked for, never a key)."""


def receiver(url: str) -> str:
    """scheme://host:port of a receiver: what logs and Events name (a path or query may hold a token)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0].rsplit('@', 1)[-1]}"


def backoff(attempts: int, base: float, cap: float, rand: random.Random | None = None) -> float:
    """The delay after `attempts` failed attempts: base doubling to cap, jittered into its upper half."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return float(delay * (rand or random).uniform(0.5, 1.0))


class Notifier:
    """The operator's webhook deliveries: one loop a task with pending events."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.policy = policy_of(settings)
        key = settings.webhook_signing_key
        self.default_keys = parse_keys(key.get_secret_value(), "GENTASK_WEBHOOK_SIGNING_KEY") if key else None
        self.horizon = timedelta(seconds=settings.webhook_horizon)
        self.slots = asyncio.Semaphore(settings.webhook_concurrency)
        self.loops: dict[str, asyncio.Task[None]] = {}
        self.wakes: dict[str, asyncio.Event] = {}
        self._sender: WebhookSender | None = None

    @property
    def sender(self) -> WebhookSender:
        """The HTTP sender, made on the first delivery (an operator without webhooks never opens it)."""
        if self._sender is None:
            from gentask.webhooks.sender import WebhookSender
            self._sender = WebhookSender(limit=self.ctx.settings.webhook_concurrency)
        return self._sender

    async def close(self) -> None:
        """Stop every loop (what they had not recorded is sent again after a restart) and the sender."""
        loops = list(self.loops.values())
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self._sender is not None:
            await self._sender.close()

    # --- what the handlers call -----------------------------------------------------------

    async def refusal(self, task: GenerationTask) -> str | None:
        """Why spec.notify.url may not be called (for Failed/InvalidSpec before any run), or None.

        A name that cannot be resolved now is not refused: it is checked again before each send."""
        notify = task.spec.notify
        if notify is None:
            return None
        try:
            await vet(notify.url, self.policy, "spec.notify.url")
        except CallbackRefused as exc:
            return str(exc)
        except Unresolved:
            return None
        return None

    def observe(self, task: GenerationTask) -> None:
        """A task as the watch (or the audit) showed it: deliver what it has pending, if anything."""
        if task.spec.notify is None or not task.uid or task.metadata.deletion_timestamp:
            return
        if not _pending(task):
            return
        uid = task.uid
        if uid in self.loops:
            self.wakes[uid].set()
            return
        self.wakes[uid] = asyncio.Event()
        self.loops[uid] = asyncio.create_task(self._run(uid, task.namespace, task.name),
                                              name=f"notify {task.namespace}/{task.name}")

    def forget(self, uid: str) -> None:
        """The task is gone: stop its loop."""
        loop = self.loops.get(uid)
        if loop is not None:
            loop.cancel()

    # --- one task's loop ------------------------------------------------------------------

    async def _run(self, uid: str, namespace: str, name: str) -> None:
        wake = self.wakes[uid]
        task: GenerationTask | None = None
        try:
            while True:
                wake.clear()            # before the read: a change seen after it wakes the wait below
                try:
                    if task is None:
                        task = GenerationTask.model_validate(await self.ctx.kube.get_task(namespace, name))
                    if task.uid != uid:
                        return          # deleted, and another task of that name made since
                    pending = _pending(task)
                    if not pending:
                        if wake.is_set():       # a change seen while reading may be newer than the read
                            task = None
                            continue
                        return
                    now = datetime.now(UTC)
                    due = [(event, state) for event, state in pending
                           if state is None or state.next_attempt_time is None or state.next_attempt_time <= now]
                    if due:
                        task = await self._round(task, due)
                        continue
                    wait = min(s.next_attempt_time for _e, s in pending if s and s.next_attempt_time) - now
                    try:
                        await asyncio.wait_for(wake.wait(), max(0.0, wait.total_seconds()))
                    except TimeoutError:
                        pass
                    task = None         # read it again: the status is the truth
                except KubeError as exc:
                    if exc.not_found:
                        return
                    log.warning("webhook deliveries of %s/%s wait: %s", namespace, name, exc.reason)
                    task = None
                    await asyncio.sleep(ERROR_PAUSE)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - logged; the next observation of the task starts a new loop
            log.exception("webhook deliveries of %s/%s stopped", namespace, name)
        finally:
            self.loops.pop(uid, None)
            self.wakes.pop(uid, None)

    async def _round(self, task: GenerationTask, due: list[tuple[DueEvent, Notification | None]]) -> GenerationTask:
        """Attempt every due event, in order; write their states; the task as the write left it."""
        states = {n.id: n for n in task.status.notifications}
        for event, state in due:
            states[event.id] = await self._attempt(task, event, state)
        current = {d.id for d in due_events(task)}
        # entries of events no longer due (a superseded progress note) go; the rest stay, in order
        kept = [states[n.id] for n in task.status.notifications if n.id in current]
        kept += [states[d.id] for d, _ in due if d.id not in {n.id for n in task.status.notifications}]
        patch = {"notifications": [n.model_dump(by_alias=True, exclude_none=True, mode="json") for n in kept]}
        updated = await self.ctx.kube.patch_task_status(task.namespace, task.name, patch)
        self.ctx.metrics.api_writes.labels("notifications").inc()
        self.ctx.mirror.put(updated)        # a finished task's write comes through no watch
        return GenerationTask.model_validate(updated)

    async def _attempt(self, task: GenerationTask, event: DueEvent, state: Notification | None) -> Notification:
        """One attempt at one event: its new state."""
        notify = task.spec.notify
        assert notify is not None
        metrics = self.ctx.metrics
        attempts = (state.attempts if state else 0) + 1
        now = datetime.now(UTC)
        since = event.time or task.status.start_time or task.metadata.creation_timestamp or now
        base = Notification(id=event.id, event=event.event, attempts=attempts, last_attempt_time=now)
        if now - since > self.horizon:
            return await self._give_up(task, event, base.model_copy(update={"attempts": attempts - 1}),
                                       f"not delivered within GENTASK_WEBHOOK_HORIZON ({self._horizon_words()}); "
                                       f"last error: {state.last_error if state else 'none'}", "horizon")
        try:
            vetted = await vet(notify.url, self.policy, "spec.notify.url")
            keys = await self._keys(task)
        except CallbackRefused as exc:
            metrics.webhook_attempts.labels(event.event.value, "refused").inc()
            return await self._give_up(task, event, base, f"refused: {exc}", "refused")
        except (KeyProblem, Unresolved) as exc:
            metrics.webhook_attempts.labels(event.event.value, "key" if isinstance(exc, KeyProblem) else
                                            "connection").inc()
            return self._retry(task, event, base, str(exc), None, since)
        body = cloud_event(task, event, now)
        headers = sign(keys, event.id, int(now.timestamp()), body)
        async with self.slots:
            outcome = await self.sender.send(vetted, headers, body)
        metrics.webhook_attempts.labels(event.event.value, outcome.result).inc()
        if outcome.delivered:
            done = datetime.now(UTC)
            metrics.webhook_deliveries.labels(event.event.value, "delivered").inc()
            if event.time is not None:
                metrics.webhook_lag.labels(event.event.value).observe(max(0.0, (done - event.time).total_seconds()))
            log.info("webhook delivered", extra={"task": f"{task.namespace}/{task.name}", "event": event.event.value,
                                                 "id": event.id, "attempts": attempts})
            return base.model_copy(update={"state": "Delivered", "delivered_time": done})
        error = outcome.error or "failed"
        if not outcome.retryable:
            return await self._give_up(task, event, base, error, "rejected")
        return self._retry(task, event, base, error, outcome.retry_after, since)

    def _retry(self, task: GenerationTask, event: DueEvent, base: Notification, error: str,
               after: float | None, since: datetime) -> Notification:
        settings = self.ctx.settings
        delay = backoff(base.attempts, settings.webhook_retry_base, settings.webhook_retry_max)
        if after is not None:
            delay = max(delay, min(after, settings.webhook_retry_max))
        next_time = (base.last_attempt_time or datetime.now(UTC)) + timedelta(seconds=delay)
        if next_time - since > self.horizon:       # one last try at the horizon
            next_time = since + self.horizon
        log.info("webhook attempt failed; retrying", extra={
            "task": f"{task.namespace}/{task.name}", "event": event.event.value, "id": event.id,
            "attempts": base.attempts, "error": error, "retry_in": round(delay, 3)})
        return base.model_copy(update={"state": "Pending", "next_attempt_time": next_time,
                                       "last_error": error_text(error)})

    async def _give_up(self, task: GenerationTask, event: DueEvent, base: Notification, error: str,
                       why: str) -> Notification:
        notify = task.spec.notify
        assert notify is not None
        self.ctx.metrics.webhook_deliveries.labels(event.event.value, "failed").inc()
        message = f"webhook event {event.event.value} ({event.id}) to {receiver(notify.url)} failed: {error}"
        log.warning("webhook given up", extra={"task": f"{task.namespace}/{task.name}", "event": event.event.value,
                                               "id": event.id, "why": why, "error": error})
        from gentask.operator.writes import record_event
        await record_event(self.ctx, task, "WebhookFailed", message, warning=True)
        return base.model_copy(update={"state": "Failed", "next_attempt_time": None, "last_error": error_text(error)})

    def _horizon_words(self) -> str:
        seconds = self.horizon.total_seconds()
        return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds:g}s"

    async def _keys(self, task: GenerationTask) -> list[bytes]:
        """The signing keys: the Secret spec.notify.secretRef names, else GENTASK_WEBHOOK_SIGNING_KEY."""
        notify = task.spec.notify
        assert notify is not None
        ref = notify.secret_ref
        if ref is None:
            if self.default_keys is None:
                raise KeyProblem("no signing key: spec.notify.secretRef names no Secret and the operator has no "
                                 "GENTASK_WEBHOOK_SIGNING_KEY")
            return self.default_keys
        where = f"key {ref.key} of Secret {task.namespace}/{ref.name} (spec.notify.secretRef)"
        try:
            secret = await self.ctx.kube.get_secret(task.namespace, ref.name)
        except KubeError as exc:
            if exc.not_found:
                raise KeyProblem(f"the Secret {task.namespace}/{ref.name} (spec.notify.secretRef) does not exist"
                                 ) from None
            if exc.status == 403:
                raise KeyProblem(f"the operator may not read the Secret {task.namespace}/{ref.name} "
                                 "(spec.notify.secretRef): its Role needs get on secrets there") from None
            raise KeyProblem(f"the Secret {task.namespace}/{ref.name} could not be read: {exc.reason}") from None
        encoded = (secret.get("data") or {}).get(ref.key)
        if not encoded:
            raise KeyProblem(f"the Secret {task.namespace}/{ref.name} has no key {ref.key} (spec.notify.secretRef)")
        try:
            value = base64.b64decode(encoded).decode()
            return parse_keys(value, where)
        except (SigningKeyError, ValueError) as exc:
            raise KeyProblem(str(exc) if isinstance(exc, SigningKeyError) else f"{where} is not text") from None


def _pending(task: GenerationTask) -> list[tuple[DueEvent, Notification | None]]:
    """The task's due events that are not settled (Delivered or Failed), with their state so far."""
    states = {n.id: n for n in task.status.notifications}
    out = []
    for event in due_events(task):
        state = states.get(event.id)
        if state is None or state.state == "Pending":
            out.append((event, state))
    return out

