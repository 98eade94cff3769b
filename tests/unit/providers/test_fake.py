"""The fake provider: real files, prompt directives that drive every failure path."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import time

import pytest

from gentask.providers import BadRequestError, GenerationFailed, Registry, generate
from gentask.providers.fake import FAULTS, FakeProvider, parse_directives
from tests.support.media import mp4_boxes

from .conftest import png_pixels, task


@pytest.fixture
def fake():
    return FakeProvider(timeout=0.3)


@pytest.fixture
def reg(fake):
    return Registry([fake])


async def test_fake_image_is_a_png_of_the_asked_size_picturing_the_prompts_colour(reg, policy):
    result = await generate(task("image", "fake", "fake-image", prompt="a red fox", params={"size": "300x200"}),
                            registry=reg, policy=policy)
    width, height, rows = png_pixels(result.images[0].data)
    assert (width, height) == (300, 200)
    centre = rows[110][150 * 3:150 * 3 + 3]
    assert centre == bytes((220, 40, 30))                 # "red" colours the disc
    assert rows[0][:3] != centre                          # and the background is something else


async def test_fake_text_is_deterministic_and_honours_max_tokens(reg, policy):
    spec = task("text", "fake", "fake-text", prompt="tell me about rivers", params={"maxTokens": 7})
    first = await generate(spec, registry=reg, policy=policy)
    second = await generate(spec, registry=reg, policy=policy)
    assert first.text == second.text and len(first.text.split()) == 7 and first.finish_reason == "length"
    roomy = await generate(task("text", "fake", "fake-text", prompt="tell me about rivers", params={"maxTokens": 5000}),
                           registry=reg, policy=policy)
    assert roomy.finish_reason == "stop" and roomy.usage["completion_tokens"] == len(roomy.text.split()) < 5000


def _mp4_samples(data: bytes) -> tuple[int, int, int]:
    """(sample count, width, height) read from stsz and tkhd."""
    def find(kind: bytes, start: int = 0) -> int:
        return data.index(kind, start)
    stsz = find(b"stsz")
    count = struct.unpack(">I", data[stsz + 12:stsz + 16])[0]
    tkhd = find(b"tkhd")
    width, height = struct.unpack(">II", data[tkhd + 80:tkhd + 88])
    return count, width >> 16, height >> 16


async def test_fake_video_is_an_h264_mp4_of_the_asked_length_and_shape(reg, policy):
    result = await generate(task("video", "fake", "fake-video", params={"aspectRatio": "9:16", "duration": 3}),
                            registry=reg, policy=policy)
    data = result.video.data
    assert mp4_boxes(data) == ["ftyp", "moov", "mdat"] and b"avcC" in data
    assert _mp4_samples(data) == (24, 72, 128)            # 8 frames a second, portrait
    if shutil.which("ffprobe"):
        path = f"/tmp/gentask-fake-{time.time_ns()}.mp4"
        with open(path, "wb") as f:
            f.write(data)
        probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                                "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", path],
                               capture_output=True, text=True, timeout=30)
        assert probe.stdout.strip() == "h264,72,128,24", probe.stderr


@pytest.mark.parametrize("kind", sorted(FAULTS))
async def test_every_failure_kind_can_be_driven_from_the_prompt(reg, kind):
    from gentask.providers import RetryPolicy
    policy = RetryPolicy(timeout=0.2, base_delay=0.001)
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("image", "fake", "fake-image", prompt=f"a fox [fail:{kind}]"), registry=reg, policy=policy)
    assert caught.value.reason == FAULTS[kind][0].reason


async def test_fail_first_fails_n_times_then_succeeds(reg, policy, fake):
    result = await generate(task("text", "fake", "fake-text", prompt="hi [fail-first:2:server_error]", retries=2),
                            registry=reg, policy=policy)
    assert result.attempts == 3 and fake.calls == 3
    assert not result.text.count("[fail")                 # directives never reach the output


async def test_fail_rate_fails_that_share_of_calls(policy):
    reg = Registry([FakeProvider(rng=random.Random(7))])
    outcomes = []
    for _ in range(200):
        try:
            await generate(task("text", "fake", "fake-text", prompt="x [fail-rate:0.25:rate_limited]"), registry=reg,
                           policy=policy)
            outcomes.append(True)
        except GenerationFailed:
            outcomes.append(False)
    assert 30 <= outcomes.count(False) <= 70


async def test_latency_delays_the_answer(reg, policy):
    started = time.monotonic()
    await generate(task("text", "fake", "fake-text", prompt="x [latency:150ms]"), registry=reg, policy=policy)
    assert time.monotonic() - started >= 0.15


async def test_a_video_job_can_be_told_to_fail(reg, policy, fake):
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("video", "fake", "fake-video", prompt="x [job-fail:content_rejected]", retries=2),
                       registry=reg, policy=policy)
    assert caught.value.reason == "ContentRejected" and fake.submits == 1


def test_directives_are_parsed_and_removed():
    d = parse_directives("a fox [latency:2s] in snow [fail-first:2:rate_limited] [job-fail:quota]")
    assert (d.prompt, d.latency, d.fail_first, d.job_fail) == ("a fox in snow", 2.0, (2, "rate_limited"), "quota")


@pytest.mark.parametrize("prompt, accepted", [
    ("x [fail:explode]", "accepted kinds: rate_limited, overloaded, server_error, timeout"),
    ("x [latency:soon]", "a duration such as 500ms, 2s, 1m"),
    ("x [fail-rate:2:rate_limited]", "0 <= P <= 1"),
    ("x [fail-first:two:auth]", "N >= 0"),
])
def test_a_malformed_directive_names_itself_and_what_is_accepted(prompt, accepted):
    with pytest.raises(BadRequestError) as caught:
        parse_directives(prompt)
    assert prompt[2:] in str(caught.value) and accepted in str(caught.value)
