"""The one retry loop: exponential backoff with jitter, Retry-After honoured and bounded.

Only errors whose `retryable` is true are retried. Each call runs under one timeout (AI_TIMEOUT),
whatever the provider does inside. The vendors' SDKs are not used for calls, so no retries hide
underneath this loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, TypeVar, Unpack

from gentask.providers.errors import ProviderError, ProviderTimeoutError

if TYPE_CHECKING:
    from gentask.config import Settings

log = logging.getLogger("gentask.providers")

T = TypeVar("T")

DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 120.0          # AI_TIMEOUT's default
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 8.0
DEFAULT_MAX_RETRY_AFTER = 60.0
DEFAULT_JITTER = 0.25
DEFAULT_POLL_INTERVAL = 5.0


class PolicyFields(TypedDict, total=False):
    """RetryPolicy's fields, as keyword overrides of RetryPolicy.from_settings."""

    retries: int
    timeout: float
    base_delay: float
    max_delay: float
    max_retry_after: float
    jitter: float
    poll_interval: float


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Tests shrink the delays; the worker takes `retries` from the task's spec."""

    retries: int = DEFAULT_RETRIES                  # attempts after the first
    timeout: float = DEFAULT_TIMEOUT                # seconds per vendor call
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER
    jitter: float = DEFAULT_JITTER                  # a delay is shortened by up to this fraction
    poll_interval: float = DEFAULT_POLL_INTERVAL    # between polls of a vendor job

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Unpack[PolicyFields]) -> RetryPolicy:
        """The default policy with AI_TIMEOUT as the per-call timeout; `overrides` set other fields."""
        return dataclasses.replace(cls(timeout=settings.ai_timeout), **overrides)

    def delay(self, retry: int, error: ProviderError | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if error is not None and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return backoff * (1 - self.jitter * random.random())


RetryHook = Callable[[ProviderError, int, float], None]


async def call_with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                            on_retry: RetryHook | None = None, provider: str | None = None,
                            model: str | None = None) -> tuple[T, int]:
    """`call()` until it succeeds or fails for good; returns its result and how many calls it took."""
    attempt = 0
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(policy.timeout):
                return await call(), attempt
        except TimeoutError:
            error: ProviderError = ProviderTimeoutError(f"no answer within {policy.timeout:g}s (AI_TIMEOUT)")
        except ProviderError as exc:
            error = exc
        error.provider = error.provider or provider
        error.model = error.model or model
        if not error.retryable or attempt > policy.retries:
            raise error
        wait = policy.delay(attempt, error)
        log.info("vendor call failed, retrying", extra={
            "provider": error.provider, "model": error.model, "reason": error.reason, "code": error.code,
            "request_id": error.request_id, "attempt": attempt, "retry_in_s": round(wait, 3)})
        if on_retry is not None:
            on_retry(error, attempt, wait)
        await asyncio.sleep(wait)
