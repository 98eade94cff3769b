"""Kubernetes Events about a task (what `kubectl describe gt NAME` shows)."""

from __future__ import annotations

import logging
from typing import Any

from gentask.domain.task import API_VERSION, KIND, GenerationTask
from gentask.kube.client import KubeClient
from gentask.kube.conditions import Clock, now_iso, utc_now
from gentask.kube.errors import NO_ANSWER, KubeError

log = logging.getLogger("gentask.kube.events")
MESSAGE_MAX = 1024


def event_manifest(task: GenerationTask, reason: str, message: str, warning: bool = False,
                   component: str = "gentask-operator", *, now: Clock = utc_now) -> dict[str, Any]:
    """A core/v1 Event about the task, as kubectl describe shows it."""
    ts = now_iso(now)
    involved = {"apiVersion": API_VERSION, "kind": KIND, "name": task.name, "namespace": task.namespace,
                "uid": task.uid, "resourceVersion": task.metadata.resource_version}
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{task.name}.", "namespace": task.namespace},
            "involvedObject": {k: v for k, v in involved.items() if v is not None},
            "reason": reason, "message": message[:MESSAGE_MAX], "type": "Warning" if warning else "Normal",
            "source": {"component": component}, "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
            "reportingComponent": component, "reportingInstance": component}


async def emit(kube: KubeClient, task: GenerationTask, reason: str, message: str, warning: bool = False,
               component: str = "gentask-operator") -> None:
    """Record an Event; a refusal is logged, never raised (an event is information)."""
    try:
        await kube.create_event(event_manifest(task, reason, message, warning, component))
    except KubeError as exc:
        if exc.status == NO_ANSWER:
            raise           # no answer at all: the caller's next write would fail too; let it retry
        log.warning("could not record event %s for %s/%s: %s", reason, task.namespace, task.name, exc.reason)
