"""What the operator's handlers share (built once at start-up, kept in Kopf's memo)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gentask.config import Settings
from gentask.kube.client import KubeClient
from gentask.operator.metrics import Metrics
from gentask.providers import Registry

log = logging.getLogger("gentask.operator")

MIRROR_BACKOFF_MAX = 10.0


class MirrorQueue:
    """Upserts every task change into MongoDB without ever blocking a handler.

    Only the latest object per uid waits (memory is bounded by the number of tasks). While
    MongoDB is down the queue keeps them and retries with backoff; on recovery it catches up.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.pending: dict[str, tuple[str, dict | None, float]] = {}   # uid -> (op, obj, since)
        self.wakeup = asyncio.Event()
        self.mirror = None
        self.healthy = False

    def put(self, obj: dict) -> None:
        uid = obj["metadata"]["uid"]
        since = self.pending.get(uid, ("", None, time.monotonic()))[2]
        self.pending[uid] = ("upsert", obj, since)
        self.wakeup.set()

    def delete(self, uid: str) -> None:
        since = self.pending.get(uid, ("", None, time.monotonic()))[2]
        self.pending[uid] = ("delete", None, since)
        self.wakeup.set()

    def _connect(self):
        from gentask.storage import TaskMirror, connect
        if self.mirror is None:
            mirror = TaskMirror(connect(self.settings))
            mirror.ensure_indexes()
            self.mirror = mirror
        return self.mirror

    def _flush(self, batch: dict[str, tuple[str, dict | None, float]]) -> None:
        mirror = self._connect()
        for uid, (op, obj, _since) in batch.items():
            if op == "delete":
                mirror.mark_deleted(uid)
            else:
                mirror.upsert(obj)

    async def run(self) -> None:
        from gentask.storage import StorageUnavailable
        delay = 0.5
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                batch, self.pending = self.pending, {}
                try:
                    await asyncio.to_thread(self._flush, batch)
                    self.healthy, delay = True, 0.5
                except StorageUnavailable as exc:
                    self.healthy = False
                    for uid, entry in batch.items():   # keep what is newer, else put back
                        self.pending.setdefault(uid, entry)
                    log.warning("MongoDB unavailable; %d task(s) wait for the mirror (retry in %.0fs): %s",
                                len(self.pending), delay, exc)
                    self._lag()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MIRROR_BACKOFF_MAX)
                except Exception:  # noqa: BLE001 - one bad record must not stop the mirror
                    log.exception("mirror write failed")
                    await asyncio.sleep(delay)
                self._lag()

    def _lag(self) -> None:
        oldest = min((since for _, _, since in self.pending.values()), default=None)
        self.metrics.mirror_lag.set(0 if oldest is None else time.monotonic() - oldest)
        self.metrics.mirror_pending.set(len(self.pending))


@dataclass
class OperatorContext:
    """What every handler shares: settings, the one Kubernetes client, providers, metrics, the mirror."""

    settings: Settings
    kube: KubeClient
    registry: Registry
    metrics: Metrics
    mirror: MirrorQueue
    executor: Any = None                                        # InlineExecutor when settings.executor == "inline"
    seen: dict[str, str] = field(default_factory=dict)          # uid -> last phase seen (events, metrics)
    ttl_timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    jobs_ensured: set[str] = field(default_factory=set)         # uids whose Job this process made or found
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    ready: bool = False
