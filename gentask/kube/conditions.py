"""Conditions as the Kubernetes API conventions want them (the cert-manager way): the
lastTransitionTime moves only when the status changes; observedGeneration is recorded.

The clock is injectable (`now`), so tests can pin time; times have whole seconds, as
metav1.Time serialises them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Literal

from gentask.domain.task import Condition

Clock = Callable[[], datetime]
ConditionStatus = Literal["True", "False", "Unknown"]
MESSAGE_MAX = 32768


def utc_now() -> datetime:
    """The current UTC time to the second: the default clock of conditions and status times."""
    return datetime.now(UTC).replace(microsecond=0)


def now_iso(now: Clock = utc_now) -> str:
    """The clock's time as RFC 3339 (2026-01-02T03:04:05Z)."""
    return now().strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: Sequence[Condition] | None, type_: str, status: ConditionStatus, reason: str,
                  message: str = "", generation: int | None = None, *, now: Clock = utc_now) -> list[Condition]:
    """A new list with condition `type_` set; other conditions unchanged, the list's order kept."""
    out = list(conditions or [])
    index = next((i for i, c in enumerate(out) if c.type == type_), None)
    current = out[index] if index is not None else None
    changed = current is None or current.status != status
    observed = generation if generation is not None else (current.observed_generation if current else None)
    updated = Condition(type=type_, status=status, reason=reason, message=message[:MESSAGE_MAX],
                        last_transition_time=now() if changed or current is None else current.last_transition_time,
                        observed_generation=observed)
    if index is None:
        out.append(updated)
    else:
        out[index] = updated
    return out


def get_condition(conditions: Sequence[Condition] | None, type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions or [] if c.type == type_), None)
