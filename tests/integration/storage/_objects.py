"""GenerationTask objects as the API server returns them, for the mirror tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def task_obj(uid: str, rv: int, phase: str | None = None, *, name: str | None = None, namespace: str = "ns1",
             user: str = "user123", type: str = "image", created: datetime = T0, **status) -> dict:
    """A GenerationTask object shaped as the API server returns it."""
    obj = {
        "apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
        "metadata": {"name": name or f"img-{uid}", "namespace": namespace, "uid": uid,
                     "resourceVersion": str(rv), "generation": 1,
                     "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "spec": {"type": type, "provider": "volcengine", "model": "doubao-seedream-3-0-t2i-250415",
                 "prompt": "a kitten playing in a garden", "userID": user, "priority": "default",
                 "params": {"size": "1024x1024"}, "retries": 3, "timeoutSeconds": 600},
    }
    if phase:
        obj["status"] = {"phase": phase, **status}
    return obj


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)
