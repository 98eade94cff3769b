"""Fallbacks: when retries on one (provider, model) run out on a retryable error, the next one serves."""

from __future__ import annotations

import pytest

from gentask.providers import GenerationFailed, generate

from .conftest import task

SEEDREAM3 = "doubao-seedream-3-0-t2i-250415"


async def test_a_rate_limited_vendor_falls_back_to_another_vendor(vendors, registry, policy):
    vendors.ark.inject("rate_limited", times=-1)
    result = await generate(task("image", "volcengine", SEEDREAM3, retries=1,
                                 fallbacks=[{"provider": "openai", "model": "gpt-image-1.5"}]),
                            registry=registry, policy=policy)
    assert result.served_by.model_dump() == {"provider": "openai", "model": "gpt-image-1.5"}
    [failure] = result.failures
    assert (failure.provider, failure.model, failure.reason) == ("volcengine", SEEDREAM3, "ProviderRateLimited")
    assert "ModelAccountRpmRateLimitExceeded" in failure.message
    assert vendors.ark.count("POST") == 2 and vendors.openai.count("POST") == 1


async def test_fallbacks_are_tried_in_order_until_one_serves(vendors, registry, policy):
    vendors.ark.inject("server_error", times=-1)
    vendors.openai.inject("overloaded", times=-1)
    result = await generate(task("text", "volcengine", "doubao-pro-4k",
                                 fallbacks=[{"provider": "openai", "model": "gpt-4.1"},
                                            {"provider": "fake", "model": "fake-text"}]),
                            registry=registry, policy=policy)
    assert result.provider == "fake"
    assert [(f.provider, f.reason) for f in result.failures] == [
        ("volcengine", "ProviderOverloaded"), ("openai", "ProviderOverloaded")]


async def test_a_video_falls_back_from_seedance_to_jimeng(vendors, registry, policy):
    vendors.ark.inject("rate_limited", path="/contents/generations/tasks", times=-1)
    result = await generate(task("video", "volcengine", "doubao-seedance-1-0-pro-250528",
                                 params={"aspectRatio": "1:1"},
                                 fallbacks=[{"provider": "volcengine", "model": "jimeng_vgfm_t2v_l20"}]),
                            registry=registry, policy=policy)
    assert result.model == "jimeng_vgfm_t2v_l20" and result.provider_task_id.isdigit()


async def test_a_permanent_error_does_not_fall_back(vendors, registry, policy):
    vendors.ark.inject("content_rejected")
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("image", "volcengine", SEEDREAM3, retries=3,
                            fallbacks=[{"provider": "openai", "model": "gpt-image-1.5"}]),
                       registry=registry, policy=policy)
    assert caught.value.reason == "ContentRejected"
    assert vendors.openai.count("POST") == 0


async def test_when_every_target_fails_all_failures_are_reported(vendors, registry, policy):
    vendors.ark.inject("rate_limited", times=-1)
    vendors.openai.inject("server_error", times=-1)
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("image", "volcengine", SEEDREAM3,
                            fallbacks=[{"provider": "openai", "model": "gpt-image-1.5"}]),
                       registry=registry, policy=policy)
    assert caught.value.reason == "ProviderOverloaded"          # the last one's
    assert [f.reason for f in caught.value.failures] == ["ProviderRateLimited", "ProviderOverloaded"]
