"""The catalog's validation table: what a task may ask of each model, and what it is told when it may not."""

from __future__ import annotations

import pytest

from gentask.domain.catalog import MODELS, InvalidSpecError, ModelRetiredError, lookup, validate_spec
from gentask.domain.task import GenerationTaskSpec, TaskType

SEEDREAM3 = "doubao-seedream-3-0-t2i-250415"
JIMENG_IMAGE = "jimeng_high_aes_general_v21_L"
JIMENG_VIDEO = "jimeng_vgfm_t2v_l20"


def spec(type_, provider, model, **kw) -> GenerationTaskSpec:
    return GenerationTaskSpec(type=type_, provider=provider, model=model, prompt="a kitten", **kw)


# (spec, error class, field, value shown, text of the accepted values)
REFUSED = [
    (spec("image", "volcengine", SEEDREAM3, params={"size": "1000x1000"}), InvalidSpecError,
     "spec.params.size", "'1000x1000'",
     "1024x1024, 864x1152, 1152x864, 1280x720, 720x1280, 832x1248, 1248x832, 1512x648"),
    (spec("image", "volcengine", SEEDREAM3, params={"aspectRatio": "16:9"}), InvalidSpecError,
     "spec.params.aspectRatio", "'16:9'", "accepts parameters size, responseFormat, n, seed"),
    (spec("image", "volcengine", SEEDREAM3, params={"n": 2}), InvalidSpecError, "spec.params.n", "2", "accepts 1"),
    (spec("image", "volcengine", JIMENG_IMAGE, params={"size": "1024x1024"}), InvalidSpecError,
     "spec.params.size", "'1024x1024'", "512x512, 512x384, 384x512, 512x341, 341x512, 512x288, 288x512"),
    (spec("video", "volcengine", JIMENG_VIDEO, params={"aspectRatio": "2:1"}), InvalidSpecError,
     "spec.params.aspectRatio", "'2:1'", "16:9, 9:16, 1:1, 4:3, 3:4, 21:9"),
    (spec("video", "volcengine", JIMENG_VIDEO, params={"duration": 5}), InvalidSpecError,
     "spec.params.duration", "5", "accepts parameters seed, aspectRatio"),
    (spec("video", "volcengine", "doubao-seedance-1-0-pro-250528", params={"resolution": "4000p"}), InvalidSpecError,
     "spec.params.resolution", "'4000p'", "480p, 720p, 1080p"),
    (spec("text", "volcengine", "doubao-pro-4k", params={"maxTokens": 5000}), InvalidSpecError,
     "spec.params.maxTokens", "5000", "1..4096"),
    (spec("text", "volcengine", "doubao-pro-4k", params={"temperature": 1.5}), InvalidSpecError,
     "spec.params.temperature", "1.5", "0..1"),
    (spec("text", "openai", "gpt-5", params={"temperature": 0.2}), InvalidSpecError,
     "spec.params.temperature", "0.2", "accepts parameters maxTokens, systemPrompt"),
    (spec("image", "openai", "gpt-image-2", params={"size": "1000x1000"}), InvalidSpecError,
     "spec.params.size", "'1000x1000'", "multiples of 16"),
    (spec("image", "volcengine", "doubao-seedream-4-0-250828", params={"size": "512x512"}), InvalidSpecError,
     "spec.params.size", "'512x512'", "921600..16777216 pixels"),
    (spec("image", "nope", "x"), InvalidSpecError, "spec.provider", "'nope'",
     "known providers: fake, openai, volcengine"),
    (spec("image", "volcengine", "doubao-seedream-9"), InvalidSpecError, "spec.model", "'doubao-seedream-9'",
     "image models of volcengine: doubao-seedream-3-0-t2i-250415"),
    (spec("video", "volcengine", SEEDREAM3), InvalidSpecError, "spec.model", f"'{SEEDREAM3}'",
     "it is an image model; video models of volcengine: doubao-seedance-1-0-pro-250528"),
    (spec("image", "openai", "dall-e-3"), ModelRetiredError, "spec.model", "'dall-e-3'",
     "openai retired it on 2026-05-12; use openai/gpt-image-1.5 instead"),
    (spec("image", "openai", "gpt-image-1"), ModelRetiredError, "spec.model", "'gpt-image-1'",
     "use openai/gpt-image-1.5 instead"),
    (spec("video", "openai", "sora-2"), ModelRetiredError, "spec.model", "'sora-2'",
     "use volcengine/doubao-seedance-1-0-pro-250528 instead"),
    (spec("image", "volcengine", SEEDREAM3, params={"size": "1280x720"},
          fallbacks=[{"provider": "openai", "model": "gpt-image-1.5"}]),
     InvalidSpecError, "spec.params.size", "'1280x720'",
     "fallbacks[0] openai/gpt-image-1.5 accepts 1024x1024, 1536x1024, 1024x1536"),
    (spec("image", "volcengine", SEEDREAM3, fallbacks=[{"provider": "openai", "model": "dall-e-3"}]),
     ModelRetiredError, "spec.fallbacks[0].model", "'dall-e-3'", "use openai/gpt-image-1.5 instead"),
    (spec("image", "volcengine", SEEDREAM3, fallbacks=[{"provider": "volcengine", "model": SEEDREAM3}]),
     InvalidSpecError, "spec.fallbacks[0].model", f"'volcengine/{SEEDREAM3}'", "each (provider, model) at most once"),
]


@pytest.mark.parametrize("task, error, field, value, accepted", REFUSED,
                         ids=[f"{r[2]}={r[3]}" for r in REFUSED])
def test_a_refused_spec_names_field_value_and_accepted_values(task, error, field, value, accepted):
    with pytest.raises(error) as caught:
        validate_spec(task)
    message = str(caught.value)
    assert f"{field}: {value} is not accepted" in message
    assert accepted in message
    assert caught.value.reason == ("ModelRetired" if error is ModelRetiredError else "InvalidSpec")


def test_every_problem_of_a_spec_is_reported_at_once():
    with pytest.raises(InvalidSpecError) as caught:
        validate_spec(spec("image", "volcengine", SEEDREAM3, params={"size": "1000x1000", "duration": 5}))
    assert [p.field for p in caught.value.problems] == ["spec.params.size", "spec.params.duration"]


def test_a_provider_that_is_not_enabled_is_refused_with_the_enabled_ones():
    with pytest.raises(InvalidSpecError, match=r"spec.provider: 'openai' is not accepted; enabled providers "
                                               r"\(GENTASK_PROVIDERS\): fake, volcengine"):
        validate_spec(spec("text", "openai", "gpt-4"), enabled=["volcengine", "fake"])


@pytest.mark.parametrize("size", ["1024x1024", "864x1152", "1152x864", "1280x720", "720x1280", "832x1248",
                                  "1248x832", "1512x648"])
def test_the_old_servers_seedream_sizes_are_accepted(size):
    [target] = validate_spec(spec("image", "volcengine", SEEDREAM3, params={"size": size}))
    assert target.params["size"] == size


@pytest.mark.parametrize("size", ["512x512", "512x384", "384x512", "512x341", "341x512", "512x288", "288x512"])
def test_the_old_servers_jimeng_sizes_are_accepted(size):
    [target] = validate_spec(spec("image", "volcengine", JIMENG_IMAGE, params={"size": size}))
    assert target.params["size"] == size


@pytest.mark.parametrize("ratio", ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"])
def test_the_old_servers_jimeng_video_ratios_and_seed_are_accepted(ratio):
    [target] = validate_spec(spec("video", "volcengine", JIMENG_VIDEO, params={"aspectRatio": ratio, "seed": 42}))
    assert (target.params["aspect_ratio"], target.params["seed"]) == (ratio, 42)


def test_defaults_fill_what_the_task_leaves_out():
    [target] = validate_spec(spec("image", "volcengine", SEEDREAM3))
    assert target.params == {"size": "1024x1024", "response_format": "url", "n": 1, "seed": -1}
    [text] = validate_spec(spec("text", "volcengine", "doubao-pro-4k", params={"maxTokens": 50}))
    assert text.params["max_tokens"] == 50 and text.params["temperature"] == 0.7


def test_fallbacks_come_back_in_order_after_the_primary():
    targets = validate_spec(spec("text", "volcengine", "doubao-pro-4k",
                                 fallbacks=[{"provider": "openai", "model": "gpt-4.1"},
                                            {"provider": "fake", "model": "fake-text"}]))
    assert [(t.provider, t.model.model) for t in targets] == [
        ("volcengine", "doubao-pro-4k"), ("openai", "gpt-4.1"), ("fake", "fake-text")]


@pytest.mark.parametrize("entry", [m for m in MODELS if not m.retired], ids=lambda m: f"{m.provider}/{m.model}")
def test_every_available_model_accepts_a_task_with_its_defaults(entry):
    [target] = validate_spec(spec(entry.type.value, entry.provider, entry.model))
    assert target.model is entry and set(target.params) >= set(entry.defaults)


@pytest.mark.parametrize("entry", [m for m in MODELS if m.retired], ids=lambda m: f"{m.provider}/{m.model}")
def test_every_retired_model_names_an_available_successor_of_the_same_type(entry):
    provider, model = entry.successor.split("/")
    successor = lookup(provider, model)
    assert successor is not None and not successor.retired and successor.type is entry.type


def test_the_old_servers_models_are_all_listed():
    for provider, model, type_ in [("volcengine", SEEDREAM3, TaskType.IMAGE),
                                   ("volcengine", JIMENG_IMAGE, TaskType.IMAGE),
                                   ("volcengine", JIMENG_VIDEO, TaskType.VIDEO),
                                   ("volcengine", "doubao-pro-4k", TaskType.TEXT),
                                   ("openai", "dall-e-3", TaskType.IMAGE), ("openai", "gpt-4", TaskType.TEXT),
                                   ("openai", "sora-2", TaskType.VIDEO)]:
        assert lookup(provider, model).type is type_
