"""The retry loop against real vendor answers: retry then success, exhaustion, Retry-After, timeouts."""

from __future__ import annotations

import time

import pytest

from gentask.providers import GenerationFailed, RetryPolicy, generate
from gentask.providers.errors import RateLimitedError

from .conftest import task

SEEDREAM3 = "doubao-seedream-3-0-t2i-250415"


async def test_rate_limited_twice_then_served(vendors, registry, policy):
    vendors.ark.inject("rate_limited", times=2)
    result = await generate(task("image", "volcengine", SEEDREAM3, retries=3), registry=registry, policy=policy)
    assert result.attempts == 3 and result.failures == []
    assert vendors.ark.count("POST", "/images/generations") == 3


SPECS = {"ark": task("text", "volcengine", "doubao-pro-4k", retries=2),
         "visual": task("image", "volcengine", "jimeng_high_aes_general_v21_L", retries=2),
         "openai": task("text", "openai", "gpt-4", retries=2)}
TRANSIENT = [(server, kind) for server in SPECS for kind in ("rate_limited", "overloaded", "server_error", "drop")
             if (server, kind) != ("visual", "server_error")]      # Jimeng 50500: "do not retry", says the vendor


@pytest.mark.parametrize("server, kind", TRANSIENT)
async def test_each_vendors_transient_errors_are_retried(vendors, registry, policy, server, kind):
    spec = SPECS[server]
    getattr(vendors, server).inject(kind, times=2)
    result = await generate(spec, registry=registry, policy=policy)
    assert result.attempts == 3


async def test_retries_exhausted_fails_with_the_last_reason_and_records_the_failure(vendors, registry, policy):
    vendors.ark.inject("rate_limited", times=-1)
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("image", "volcengine", SEEDREAM3, retries=2), registry=registry, policy=policy)
    assert caught.value.reason == "ProviderRateLimited" and caught.value.retryable
    assert caught.value.error.code == "ModelAccountRpmRateLimitExceeded"
    [failure] = caught.value.failures
    assert (failure.provider, failure.model, failure.reason) == ("volcengine", SEEDREAM3, "ProviderRateLimited")
    assert vendors.ark.count("POST") == 3


async def test_permanent_errors_are_not_retried(vendors, registry, policy):
    vendors.openai.inject("content_rejected", times=-1)
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("image", "openai", "gpt-image-1.5", retries=5), registry=registry, policy=policy)
    assert caught.value.reason == "ContentRejected" and not caught.value.retryable
    assert vendors.openai.count("POST") == 1


@pytest.mark.parametrize("server, spec", [
    ("ark", task("image", "volcengine", SEEDREAM3, retries=1)),
    ("openai", task("text", "openai", "gpt-4", retries=1)),          # sends retry-after-ms as well
])
async def test_retry_after_is_honoured(vendors, registry, policy, server, spec):
    getattr(vendors, server).inject("rate_limited", retry_after=0.4)
    started = time.monotonic()
    await generate(spec, registry=registry, policy=policy)        # base delay 0.01 s: only Retry-After waits
    assert time.monotonic() - started >= 0.39


async def test_retry_after_is_bounded(vendors, registry):
    vendors.ark.inject("rate_limited", retry_after=3600)
    policy = RetryPolicy(timeout=2, base_delay=0.01, max_retry_after=0.05)
    started = time.monotonic()
    await generate(task("image", "volcengine", SEEDREAM3, retries=1), registry=registry, policy=policy)
    assert time.monotonic() - started < 1


async def test_a_slow_vendor_times_out_after_ai_timeout(vendors, registry):
    vendors.ark.inject("slow", delay=1.5)
    policy = RetryPolicy(timeout=0.2, base_delay=0.01)
    started = time.monotonic()
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("text", "volcengine", "doubao-pro-4k"), registry=registry, policy=policy)
    assert caught.value.reason == "ProviderTimeout" and "AI_TIMEOUT" in str(caught.value)
    assert time.monotonic() - started < 1


async def test_the_http_client_timeout_comes_from_ai_timeout(vendors):
    from gentask.providers import registry_from_settings
    vendors.openai.inject("slow", delay=1.5)
    policy = RetryPolicy(timeout=30, base_delay=0.01)             # the per-call guard is not what fires here
    async with registry_from_settings(vendors.settings(ai_timeout=0.2)) as registry:
        with pytest.raises(GenerationFailed) as caught:
            await generate(task("text", "openai", "gpt-4"), registry=registry, policy=policy)
    assert caught.value.reason == "ProviderTimeout"


async def test_a_timeout_then_an_answer(vendors, registry):
    vendors.visual.inject("slow", delay=1.0)
    policy = RetryPolicy(timeout=0.2, base_delay=0.01)
    result = await generate(task("image", "volcengine", "jimeng_high_aes_general_v21_L", retries=1),
                            registry=registry, policy=policy)
    assert result.attempts == 2


async def test_a_rate_limited_poll_does_not_submit_again(vendors, registry, policy):
    vendors.ark.inject("rate_limited", path="/contents/generations/tasks/", times=2)
    result = await generate(task("video", "volcengine", "doubao-seedance-1-0-pro-250528", retries=2),
                            registry=registry, policy=policy)
    assert result.video.url
    assert vendors.ark.count("POST", "/tasks") == 1


async def test_an_output_review_failure_of_a_jimeng_job_is_submitted_again(vendors, registry, policy):
    vendors.visual.inject("job_failed", path="Action=CVSync2AsyncSubmitTask", code=50511)
    result = await generate(task("video", "volcengine", "jimeng_t2v_v30", retries=1), registry=registry, policy=policy)
    assert result.video.url and result.attempts == 2
    submits = [r for r in vendors.visual.requests if r.arg("Action") == "CVSync2AsyncSubmitTask"]
    assert len(submits) == 2


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.25)
    for retry, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(full * 0.75 <= d <= full for d in delays)
        assert max(delays) - min(delays) > 0            # jittered, so a crowd of workers spreads out
    assert policy.delay(1, RateLimitedError("x", retry_after=3.0)) == 3.0
