"""Conditions as the Kubernetes API conventions want them (the cert-manager way): the
lastTransitionTime moves only when the status changes; observedGeneration is recorded."""

from __future__ import annotations

from datetime import datetime, timezone


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[dict] | None, type_: str, status: str, reason: str, message: str = "",
                  generation: int | None = None) -> list[dict]:
    """A new list with condition `type_` set; other conditions unchanged."""
    out = [dict(c) for c in conditions or []]
    current = next((c for c in out if c.get("type") == type_), None)
    if current is None:
        current = {"type": type_}
        out.append(current)
    if current.get("status") != status or "lastTransitionTime" not in current:
        current["lastTransitionTime"] = now_iso()
    current.update(status=status, reason=reason, message=message[:32768])
    if generation is not None:
        current["observedGeneration"] = generation
    return out


def get_condition(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
