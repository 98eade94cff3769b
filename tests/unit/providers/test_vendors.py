"""Every vendor x task type on its success path, over real HTTP to the local vendor servers."""

from __future__ import annotations

import httpx
import pytest

from gentask.domain.catalog import lookup
from gentask.providers import GenerationRequest, JobState, generate
from tests.support.media import mp4_boxes

from .conftest import png_pixels, task


async def download(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url)


async def test_ark_image_as_url_downloads_a_png_of_the_asked_size(vendors, registry, policy):
    result = await generate(task("image", "volcengine", "doubao-seedream-3-0-t2i-250415",
                                 params={"size": "1280x720", "responseFormat": "url"}),
                            registry=registry, policy=policy)
    [image] = result.images
    assert image.data is None and image.url_expires_at is not None
    response = await download(image.url)
    assert response.status_code == 200
    assert png_pixels(response.content)[:2] == (1280, 720)
    assert result.usage["generated_images"] == 1
    assert result.served_by.model_dump() == {"provider": "volcengine", "model": "doubao-seedream-3-0-t2i-250415"}
    assert result.request_id and result.failures == []


async def test_ark_image_as_base64_comes_back_as_png_bytes(vendors, registry, policy):
    result = await generate(task("image", "volcengine", "doubao-seedream-3-0-t2i-250415",
                                 params={"size": "864x1152", "responseFormat": "b64_json"}),
                            registry=registry, policy=policy)
    [image] = result.images
    assert image.url is None and image.mime_type == "image/png"
    assert png_pixels(image.data)[:2] == (864, 1152)


async def test_seedream_4_returns_a_group_of_n_images(vendors, registry, policy):
    result = await generate(task("image", "volcengine", "doubao-seedream-4-5-251128",
                                 params={"size": "1280x720", "n": 3}), registry=registry, policy=policy)
    assert len(result.images) == 3 and all(i.url for i in result.images)


async def test_ark_text_honours_max_tokens_and_reports_usage(vendors, registry, policy):
    result = await generate(task("text", "volcengine", "doubao-pro-4k", prompt="write a haiku",
                                 params={"maxTokens": 6, "systemPrompt": "be brief"}), registry=registry, policy=policy)
    assert len(result.text.split()) == 6 and result.finish_reason == "length"
    assert result.usage["completion_tokens"] == 6 and result.usage["total_tokens"] > 6


async def test_ark_video_task_is_created_polled_and_returns_an_mp4_url(vendors, registry, policy):
    result = await generate(task("video", "volcengine", "doubao-seedance-1-0-pro-250528",
                                 params={"aspectRatio": "9:16", "duration": 3}), registry=registry, policy=policy)
    assert result.provider_task_id.startswith("cgt-")
    assert vendors.ark.count("POST", "/contents/generations/tasks") == 1
    assert vendors.ark.count("GET", "/contents/generations/tasks/") == 3      # queued, running, succeeded
    response = await download(result.video.url)
    assert mp4_boxes(response.content) == ["ftyp", "moov", "mdat"]
    assert result.usage["total_tokens"] == 1920 * 1088 * 24 * 3 // 1024     # 1080p: w x h x 24 fps x s / 1024


async def test_jimeng_image_as_url_and_as_base64(vendors, registry, policy):
    for fmt in ("url", "b64_json"):
        result = await generate(task("image", "volcengine", "jimeng_high_aes_general_v21_L",
                                     params={"size": "512x384", "responseFormat": fmt}),
                                registry=registry, policy=policy)
        [image] = result.images
        assert png_pixels(image.data)[:2] == (512, 384)            # Jimeng always sends the bytes
        if fmt == "url":
            assert png_pixels((await download(image.url)).content)[:2] == (512, 384)
        else:
            assert image.url is None


@pytest.mark.parametrize("model, params", [("jimeng_vgfm_t2v_l20", {"aspectRatio": "21:9", "seed": 7}),
                                           ("jimeng_t2v_v30", {"duration": 10})])
async def test_jimeng_video_is_submitted_polled_and_returns_an_mp4_url(vendors, registry, policy, model, params):
    result = await generate(task("video", "volcengine", model, params=params), registry=registry, policy=policy)
    assert result.provider_task_id.isdigit()
    assert vendors.visual.count("POST") == 4                      # submit + in_queue, generating, done
    assert mp4_boxes((await download(result.video.url)).content)[0] == "ftyp"


async def test_openai_gpt_image_comes_back_as_bytes_without_sending_response_format(vendors, registry, policy):
    # the local server refuses response_format for gpt-image models, as OpenAI does
    result = await generate(task("image", "openai", "gpt-image-1.5", params={"size": "1536x1024", "n": 2,
                                                                             "responseFormat": "url"}),
                            registry=registry, policy=policy)
    assert [png_pixels(i.data)[:2] for i in result.images] == [(1536, 1024)] * 2
    assert result.usage["output_tokens"] == 544


async def test_openai_gpt_image_2_takes_any_size_in_multiples_of_16(vendors, registry, policy):
    result = await generate(task("image", "openai", "gpt-image-2", params={"size": "1920x1088"}),
                            registry=registry, policy=policy)
    assert png_pixels(result.images[0].data)[:2] == (1920, 1088)


@pytest.mark.parametrize("fmt", ["url", "b64_json"])
async def test_openai_dall_e_url_and_base64_on_the_wire(vendors, registry, fmt):
    # dall-e-3 is retired in the catalog; the client still speaks its wire format
    entry = lookup("openai", "dall-e-3")
    request = GenerationRequest(entry, "a lighthouse", {**entry.defaults, "size": "1792x1024", "response_format": fmt})
    result = await registry.get("openai").generate(request)
    [image] = result.images
    data = (await download(image.url)).content if fmt == "url" else image.data
    assert png_pixels(data)[:2] == (1792, 1024)


@pytest.mark.parametrize("model", ["gpt-4", "gpt-5"])
async def test_openai_chat_with_the_right_token_field_for_the_model(vendors, registry, policy, model):
    # gpt-5 must get max_completion_tokens and no temperature, or the local server answers 400
    result = await generate(task("text", "openai", model, prompt="name three rivers",
                                 params={"maxTokens": 9, "systemPrompt": "you are terse"}),
                            registry=registry, policy=policy)
    assert len(result.text.split()) == 9 and result.usage["completion_tokens"] == 9


async def test_openai_sora_job_on_the_wire_returns_mp4_bytes(vendors, registry):
    entry = lookup("openai", "sora-2")      # retired in the catalog; the wire format is still spoken
    request = GenerationRequest(entry, "waves", {**entry.defaults, "aspect_ratio": "16:9", "duration": 8})
    provider = registry.get("openai")
    video_id = await provider.submit(request)
    states = []
    while not states or not states[-1].state.done:
        states.append(await provider.poll(request, video_id))
    assert [s.state for s in states] == [JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED]
    assert states[1].progress == 50
    assert mp4_boxes(states[-1].result.video.data)[0] == "ftyp"
    await provider.cancel(request, video_id)
    assert vendors.openai.count("DELETE", f"/videos/{video_id}") == 1


async def test_fake_image_text_and_video(registry, policy):
    image = await generate(task("image", "fake", "fake-image", params={"size": "320x200", "n": 2}),
                           registry=registry, policy=policy)
    assert [png_pixels(i.data)[:2] for i in image.images] == [(320, 200)] * 2
    text = await generate(task("text", "fake", "fake-text", params={"maxTokens": 12}), registry=registry, policy=policy)
    assert len(text.text.split()) == 12
    video = await generate(task("video", "fake", "fake-video", params={"duration": 1}),
                           registry=registry, policy=policy)
    assert mp4_boxes(video.video.data) == ["ftyp", "moov", "mdat"] and video.provider_task_id.startswith("fake-")
