"""What each vendor attempt cost, as the runner records it against the local vendor servers and
the price table prices it: a result costs its usage, a refusal nothing, a failed job what it used."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gentask.domain.pricing import PriceTable, task_cost
from gentask.providers import GenerationFailed, generate
from tests.unit.providers.conftest import task

PRICES = PriceTable()


def cost_of(attempts, spec):
    return task_cost(attempts, PRICES, primary=(spec.provider, spec.model))


async def test_a_seedream_image_costs_the_price_of_the_images_the_vendor_reports(vendors, registry, policy):
    spec = task("image", "volcengine", "doubao-seedream-4-0-250828", params={"size": "1280x720", "n": 3})
    result = await generate(spec, registry=registry, policy=policy)
    out = cost_of(result.attempt_log, spec)
    assert out["usage"]["images"] == 3 == result.usage["generated_images"]
    assert out["cost"] == {"amount": "0.6", "currency": "CNY", "totals": [{"amount": "0.6", "currency": "CNY"}],
                           "attempts": [{"provider": "volcengine", "model": "doubao-seedream-4-0-250828",
                                         "outcome": "Succeeded", "amount": "0.6", "currency": "CNY",
                                         "usage": {"images": 3, "outputTokens": 3 * 4096}}]}


async def test_a_text_costs_its_input_and_output_tokens(vendors, registry, policy):
    spec = task("text", "volcengine", "doubao-seed-1-6-250615", prompt="write a haiku", params={"maxTokens": 40})
    result = await generate(spec, registry=registry, policy=policy)
    usage = result.usage
    out = cost_of(result.attempt_log, spec)
    expected = (Decimal("0.0008") * usage["prompt_tokens"] + Decimal("0.008") * usage["completion_tokens"]) / 1000
    assert Decimal(out["cost"]["amount"]) == expected.quantize(Decimal("0.000001"))
    assert out["usage"] == {"inputTokens": usage["prompt_tokens"], "outputTokens": usage["completion_tokens"]}


async def test_a_seedance_video_costs_the_video_tokens_the_vendor_bills(vendors, registry, policy):
    spec = task("video", "volcengine", "doubao-seedance-1-0-pro-250528",
                params={"duration": 5, "resolution": "720p"})
    result = await generate(spec, registry=registry, policy=policy)
    tokens = result.usage["completion_tokens"]
    assert tokens == 1248 * 704 * 24 * 5 // 1024
    out = cost_of(result.attempt_log, spec)
    assert out["usage"] == {"videoSeconds": 5, "videoTokens": tokens}
    assert Decimal(out["cost"]["amount"]) == Decimal(tokens) * Decimal("0.015") / 1000      # 1.5444 CNY
    assert out["cost"]["attempts"][0]["vendorTaskID"] == result.provider_task_id


async def test_a_request_the_vendor_refuses_costs_nothing(vendors, registry, policy):
    vendors.ark.inject("bad_request", path="/images")
    spec = task("image", "volcengine", "doubao-seedream-4-0-250828", params={"size": "1280x720"})
    with pytest.raises(GenerationFailed) as failed:
        await generate(spec, registry=registry, policy=policy)
    out = cost_of(failed.value.attempts, spec)
    assert out["cost"]["amount"] == "0" and out["cost"]["currency"] == "CNY"
    assert out["cost"]["attempts"] == [{"provider": "volcengine", "model": "doubao-seedream-4-0-250828",
                                        "outcome": "Failed", "reason": "ProviderBadRequest", "usage": {},
                                        "amount": "0", "currency": "CNY"}]


async def test_a_video_job_that_ran_then_failed_costs_the_usage_the_vendor_reports(vendors, registry, policy):
    vendors.ark.inject("job_failed", code="OutputVideoSensitiveContentDetected",
                       usage={"completion_tokens": 51480, "total_tokens": 51480})
    spec = task("video", "volcengine", "doubao-seedance-1-0-pro-250528", params={"duration": 5})
    with pytest.raises(GenerationFailed) as failed:
        await generate(spec, registry=registry, policy=policy)
    out = cost_of(failed.value.attempts, spec)
    (attempt,) = out["cost"]["attempts"]
    assert attempt["outcome"] == "Failed" and attempt["reason"] == "ContentRejected"
    assert attempt["usage"] == {"videoTokens": 51480} and attempt["vendorTaskID"].startswith("cgt-")
    assert out["cost"]["amount"] == "0.7722"          # 51,480 tokens at 15 CNY per million


async def test_a_video_job_that_failed_without_usage_costs_nothing(vendors, registry, policy):
    vendors.ark.inject("job_failed")
    spec = task("video", "volcengine", "doubao-seedance-1-0-pro-250528", params={"duration": 5})
    with pytest.raises(GenerationFailed) as failed:
        await generate(spec, registry=registry, policy=policy)
    assert cost_of(failed.value.attempts, spec)["cost"]["amount"] == "0"


async def test_a_fallback_task_shows_each_attempt_and_the_total_per_currency(vendors, registry, policy):
    vendors.ark.inject("server_error", path="/images", times=-1)
    spec = task("image", "volcengine", "doubao-seedream-4-0-250828", prompt="a red fox in the snow",
                fallbacks=[{"provider": "openai", "model": "gpt-image-1-mini"}])
    result = await generate(spec, registry=registry, policy=policy)
    out = cost_of(result.attempt_log, spec)
    # gpt-image-1-mini: 6 prompt tokens at 2 USD and 272 image tokens at 8 USD per million
    assert [(a["provider"], a["outcome"], a["amount"], a["currency"]) for a in out["cost"]["attempts"]] == [
        ("volcengine", "Failed", "0", "CNY"), ("openai", "Succeeded", "0.002188", "USD")]
    assert out["cost"]["attempts"][1]["usage"] == {"images": 1, "inputTokens": 6, "outputTokens": 272}
    assert out["cost"]["amount"] == "0.002188" and out["cost"]["currency"] == "USD"
    assert out["cost"]["totals"] == [{"amount": "0.002188", "currency": "USD"}]


async def test_jimeng_reports_no_usage_so_what_was_produced_is_charged(vendors, registry, policy):
    image = task("image", "volcengine", "jimeng_high_aes_general_v21_L", params={"size": "512x384"})
    out = cost_of((await generate(image, registry=registry, policy=policy)).attempt_log, image)
    assert out["usage"] == {"images": 1} and out["cost"]["amount"] == "0.2"
    for model, params, seconds in (("jimeng_vgfm_t2v_l20", {}, 5), ("jimeng_t2v_v30", {"duration": 10}, 10)):
        video = task("video", "volcengine", model, params=params)
        out = cost_of((await generate(video, registry=registry, policy=policy)).attempt_log, video)
        assert out["usage"] == {"videoSeconds": seconds}, model        # S2.0 Pro always makes 5 s
        assert Decimal(out["cost"]["amount"]) == seconds * PRICES.get("volcengine", model).per_second
