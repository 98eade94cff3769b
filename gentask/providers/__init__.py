"""The provider layer: vendor clients behind one interface, a registry, retries and fallbacks.

The worker's entry point is `generate(spec, registry=..., policy=..., resume=..., on_submitted=...)`
(gentask.providers.runner); `registry_from_settings(settings)` builds the registry. httpx and the
vendors' SDKs are imported here and nowhere else in gentask.
"""

from gentask.providers.base import (
    GenerationRequest,
    GenerationResult,
    JobState,
    JobStatus,
    Media,
    Provider,
)
from gentask.providers.errors import (
    AuthenticationError,
    BadRequestError,
    ContentRejectedError,
    DeadlineExceededError,
    ModelUnavailableError,
    OverloadedError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitedError,
    UnreachableError,
)
from gentask.providers.registry import ProviderNotEnabledError, Registry, registry_from_settings
from gentask.providers.retry import RetryPolicy, call_with_retries
from gentask.providers.runner import GenerationFailed, Progress, Submitted, cancel_job, generate

__all__ = [
    "AuthenticationError", "BadRequestError", "ContentRejectedError", "DeadlineExceededError", "GenerationFailed",
    "GenerationRequest", "GenerationResult", "JobState", "JobStatus", "Media", "ModelUnavailableError",
    "OverloadedError", "Progress", "Provider", "ProviderError", "ProviderNotEnabledError", "ProviderTimeoutError",
    "QuotaExceededError", "RateLimitedError", "Registry", "RetryPolicy", "Submitted", "UnreachableError",
    "call_with_retries", "cancel_job", "generate", "registry_from_settings",
]
