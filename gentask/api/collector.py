"""Short garbage-collector pauses while the task index is large.

The index (gentask.api.index) keeps every live task of the namespace as typed objects, about 30
objects the collector tracks per task with its cached view. CPython's full (generation 2)
collection walks every tracked object with the event loop stopped: measured on the development
machine with 7,000 tasks in the index (210,000 objects), 120-150 ms of CPU in one pause, and 230 ms
at 9,000, each time what survived the younger collections has grown by a quarter, so every few
seconds under a steady stream of creates. Every request in flight waits for it.

`FreezeSurvivors` moves what survived a full collection into the permanent generation (gc.freeze):
it was live at that moment, and the next full collections walk only what came after. Frozen
objects are still freed by reference counting (a task the index drops goes at once); only
reference cycles among them wait, so every `thaw_every` seconds the permanent generation is handed
back (gc.unfreeze) and one full collection walks everything: the one long pause, once an interval.
With only the survivors since the last one to walk, a full collection also runs after every
`FULL_EVERY` collections of generation 1 instead of CPython's 10, so each walks fewer objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

THAW_EVERY = 600.0
FULL_EVERY = 3


def _freeze_after_full(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()                     # the younger generations were collected into this one: all survivors


class FreezeSurvivors:
    """Installed while the app runs: `start()` in its lifespan, `stop()` at its end.

    The collector is the process's: with several apps in one process (the tests), the first start
    installs the policy and the last stop removes it."""

    active = 0
    _thresholds: tuple[int, int, int] = (0, 0, 0)

    def __init__(self, thaw_every: float = THAW_EVERY, full_every: int = FULL_EVERY) -> None:
        self.thaw_every = thaw_every
        self.full_every = full_every
        self._thawer: asyncio.Task[None] | None = None
        self._started = False

    def start(self) -> None:
        """Freeze after every full collection, and thaw every `thaw_every` seconds (needs a running loop)."""
        if self._started:
            return
        self._started = True
        if FreezeSurvivors.active == 0:
            FreezeSurvivors._thresholds = gc.get_threshold()
            gc.set_threshold(self._thresholds[0], self._thresholds[1], self.full_every)
            gc.callbacks.append(_freeze_after_full)
        FreezeSurvivors.active += 1
        if self.thaw_every > 0:
            self._thawer = asyncio.get_running_loop().create_task(self._thaw_loop(), name="gentask-api-gc-thaw")

    async def _thaw_loop(self) -> None:
        while True:
            await asyncio.sleep(self.thaw_every)
            self.thaw()

    @staticmethod
    def thaw() -> int:
        """Hand the frozen objects back and collect everything (cycles among them too); what it freed."""
        gc.unfreeze()
        return gc.collect()             # its end freezes the survivors again (the callback)

    async def stop(self) -> None:
        """Thawing stopped; with the last app, CPython's own collection back and the frozen objects handed back."""
        if not self._started:
            return
        self._started = False
        if self._thawer is not None:
            self._thawer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._thawer
            self._thawer = None
        FreezeSurvivors.active -= 1
        if FreezeSurvivors.active == 0:
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(_freeze_after_full)
            gc.set_threshold(*FreezeSurvivors._thresholds)
            gc.unfreeze()
