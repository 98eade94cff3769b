"""The inline executor: the worker's code in the operator's own process.

Bounded concurrency (GENTASK_INLINE_CONCURRENCY), critical before default before low, first
come first served within a priority. For clusters without spare nodes and for throughput: no
pod start per task. A task whose worker exits EXIT_RETRY is queued again (up to spec.retries).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from typing import TYPE_CHECKING

from gentask.domain.task import GenerationTask
from gentask.kube.names import EXIT_RETRY
from gentask.operator.context import OperatorContext

if TYPE_CHECKING:
    from gentask.storage import ArtifactStore

log = logging.getLogger("gentask.operator.inline")
RANK = {"critical": 0, "default": 1, "low": 2}


class InlineExecutor:
    """Runs queued tasks with the worker's code, a bounded number at a time, by priority."""

    def __init__(self, ctx: OperatorContext, store: ArtifactStore | None) -> None:
        self.ctx = ctx
        self.store = store
        self.queue: asyncio.PriorityQueue[tuple[int, int, tuple[str, str]]] = asyncio.PriorityQueue()
        self.known: set[tuple[str, str]] = set()
        self.running: dict[tuple[str, str], asyncio.Task[int]] = {}
        self.retries: dict[tuple[str, str], int] = {}
        self.seq = itertools.count()
        self.workers: list[asyncio.Task[None]] = []
        self.pod = f"inline-{socket.gethostname()}"

    def start(self) -> None:
        """Start the GENTASK_INLINE_CONCURRENCY work loops."""
        self.workers = [asyncio.create_task(self._work(i)) for i in range(self.ctx.settings.inline_concurrency)]

    async def stop(self) -> None:
        """Cancel the work loops and the tasks they run."""
        for task in self.workers + list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.workers, *self.running.values(), return_exceptions=True)

    def ensure(self, task: GenerationTask) -> None:
        """Queue the task unless it is queued or running already."""
        key = (task.namespace, task.name)
        if key in self.known:
            return
        self.known.add(key)
        self.queue.put_nowait((RANK.get(task.spec.priority.value, 1), next(self.seq), key))

    def cancel(self, namespace: str, name: str) -> None:
        """Stop the task's run if one is under way."""
        running = self.running.get((namespace, name))
        if running is not None:
            running.cancel()

    async def _work(self, index: int) -> None:
        from gentask.worker.run import Worker
        while True:
            _, _, key = await self.queue.get()
            worker = Worker(self.ctx.kube, self.ctx.settings, self.ctx.registry, self.store, self.pod)
            job = asyncio.create_task(worker.run(*key))
            self.running[key] = job
            try:
                code: int | None = await job
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                code = None
            except Exception:  # noqa: BLE001 - a task that crashes its worker is retried, never the executor
                log.exception("inline worker failed", extra={"task": f"{key[0]}/{key[1]}"})
                code = EXIT_RETRY
            finally:
                self.running.pop(key, None)
            self.known.discard(key)
            if code == EXIT_RETRY:
                self.retries[key] = self.retries.get(key, 0) + 1
                await asyncio.sleep(min(30.0, 2.0 ** self.retries[key]))
                self.queue.put_nowait((RANK["default"], next(self.seq), key))
                self.known.add(key)
