"""The model catalog: which (provider, model) does which task type, with which parameters.

Every model the old server knew stays listed, beside the vendors' current successors. A model
its vendor retired stays listed with `retired` and a `successor`; a task asking for it fails with
ModelRetiredError, whose message names the successor. `validate_spec` checks a GenerationTaskSpec
(primary model and every fallback) and returns the resolved targets: the model's entry and the
parameters with the model's defaults filled in. Problems raise InvalidSpecError, one line per
problem, each naming the field, the value given and what is accepted.

The provider "volcengine" covers two Volcengine APIs, as it did in the old server: Ark (bearer
ARK_API_KEY; doubao-* models) and Visual/Jimeng (V4-signed with VOLCENGINE_ACCESS_KEY and
VOLCENGINE_SECRET_KEY; jimeng_* models). `ModelSpec.api` says which one serves a model.

Facts marked (unconfirmed) in shared/reference/provider-apis.md are kept here as the reference
states them; docs/providers.md lists the catalog for users.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gentask.domain.names import to_camel
from gentask.domain.task import GenerationTaskSpec, Params, TaskType

# --- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What values one parameter accepts: `accepted` is shown to users, `check` decides."""

    accepted: str
    check: Callable[[Any], bool]
    choices: tuple[Any, ...] = ()


def choice(*values: Any) -> Rule:
    """Exactly one of `values` (compared with ==); the message lists them all."""
    return Rule(", ".join(str(v) for v in values), lambda v: v in values, tuple(values))


def between(lo: float, hi: float) -> Rule:
    """A number from lo to hi, both included."""
    return Rule(f"{lo}..{hi}", lambda v: lo <= v <= hi)


def any_text() -> Rule:
    """Any string, for free-text parameters such as a system prompt."""
    return Rule("any text", lambda v: isinstance(v, str))


def _wh(value: str) -> tuple[int, int]:
    w, h = value.split("x")
    return int(w), int(h)


def pixel_area(min_pixels: int, max_pixels: int, max_aspect: float) -> Rule:
    """WxH whose area lies in a range and whose aspect ratio is at most max_aspect either way."""
    def check(value: str) -> bool:
        w, h = _wh(value)
        return min_pixels <= w * h <= max_pixels and 1 / max_aspect <= w / h <= max_aspect
    return Rule(f"WxH with {min_pixels}..{max_pixels} pixels and aspect ratio within "
                f"1:{max_aspect:g}..{max_aspect:g}:1", check)


def multiple_of(step: int, max_long: int, max_short: int) -> Rule:
    """WxH with both sides multiples of `step`, the long side at most max_long, the short at most max_short."""
    def check(value: str) -> bool:
        w, h = _wh(value)
        return w % step == 0 and h % step == 0 and max(w, h) <= max_long and min(w, h) <= max_short
    return Rule(f"WxH, both multiples of {step}, at most {max_long}x{max_short} either way", check)


def side_range(lo: int, hi: int) -> Rule:
    """WxH with each side between lo and hi pixels, whatever the aspect ratio."""
    def check(value: str) -> bool:
        w, h = _wh(value)
        return lo <= w <= hi and lo <= h <= hi
    return Rule(f"WxH with each side {lo}..{hi}", check)


SEED = between(-1, 2147483647)
RESPONSE_FORMAT = choice("url", "b64_json")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9")

# --- entries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One (provider, model): its task type, which API serves it, its parameters and defaults."""

    provider: str
    model: str
    type: TaskType
    api: str                                   # ark | visual | openai | fake
    params: dict[str, Rule]                    # Params field name -> rule; absent fields are refused
    defaults: dict[str, Any] = field(default_factory=dict)
    retired: str | None = None                 # date the vendor retired it
    successor: str | None = None               # "provider/model" to use instead
    note: str = ""
    options: dict[str, Any] = field(default_factory=dict)   # vendor details for the provider code

    @property
    def asynchronous(self) -> bool:
        """Served by submit + poll (vendor jobs) rather than one call."""
        return self.type is TaskType.VIDEO

    @property
    def key(self) -> tuple[str, str]:
        """(provider, model): the entry's key in CATALOG."""
        return self.provider, self.model


def _image(provider: str, model: str, api: str, size: Rule, *, default_size: str, n: Rule = choice(1),
           response_format: Rule = RESPONSE_FORMAT, default_format: str = "url", seed: bool = True,
           **kw: Any) -> ModelSpec:
    params = {"size": size, "response_format": response_format, "n": n}
    defaults = {"size": default_size, "response_format": default_format, "n": 1}
    if seed:
        params["seed"], defaults["seed"] = SEED, -1
    return ModelSpec(provider, model, TaskType.IMAGE, api, params, defaults, **kw)


def _text(provider: str, model: str, api: str, max_tokens: int, temperature: Rule | None = between(0, 2),
          **kw: Any) -> ModelSpec:
    params: dict[str, Rule] = {"max_tokens": between(1, max_tokens), "system_prompt": any_text()}
    defaults: dict[str, Any] = {"max_tokens": min(1000, max_tokens)}
    if temperature is not None:
        params["temperature"] = temperature
        defaults["temperature"] = 0.7
    return ModelSpec(provider, model, TaskType.TEXT, api, params, defaults, **kw)


def _video(provider: str, model: str, api: str, params: dict[str, Rule], defaults: dict[str, Any],
           seed: bool = True, **kw: Any) -> ModelSpec:
    if seed:
        params, defaults = {"seed": SEED, **params}, {"seed": -1, **defaults}
    return ModelSpec(provider, model, TaskType.VIDEO, api, params, defaults, **kw)


SEEDREAM3_SIZES = ("1024x1024", "864x1152", "1152x864", "1280x720", "720x1280", "832x1248", "1248x832", "1512x648")
JIMENG21_SIZES = ("512x512", "512x384", "384x512", "512x341", "341x512", "512x288", "288x512")
SEEDREAM4_SIZE = pixel_area(1280 * 720, 4096 * 4096, 16)
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536")

MODELS: list[ModelSpec] = [
    # Volcengine Ark: images, text, video tasks
    _image("volcengine", "doubao-seedream-3-0-t2i-250415", "ark", choice(*SEEDREAM3_SIZES), default_size="1024x1024",
           successor="volcengine/doubao-seedream-4-0-250828", note="Seedream 3.0 text-to-image (old server)"),
    _image("volcengine", "doubao-seedream-4-0-250828", "ark", SEEDREAM4_SIZE, default_size="2048x2048",
           n=between(1, 15), note="Seedream 4.0; n > 1 asks for a group of up to n images"),
    _image("volcengine", "doubao-seedream-4-5-251128", "ark", SEEDREAM4_SIZE, default_size="2048x2048",
           n=between(1, 15), note="Seedream 4.5; n > 1 asks for a group of up to n images"),
    _text("volcengine", "doubao-pro-4k", "ark", 4096, between(0, 1),
          successor="volcengine/doubao-seed-1-6-250615",
          note="Doubao Pro 4k (old server); the vendor may require an ep-… endpoint id (unconfirmed)"),
    _text("volcengine", "doubao-seed-1-6-250615", "ark", 32768, between(0, 2), note="Doubao Seed 1.6"),
    _video("volcengine", "doubao-seedance-1-0-pro-250528", "ark",
           {"aspect_ratio": choice(*ASPECT_RATIOS), "duration": between(2, 12),
            "resolution": choice("480p", "720p", "1080p")},
           {"aspect_ratio": "16:9", "duration": 5, "resolution": "1080p"}, note="Seedance 1.0 Pro video task"),
    # Volcengine Visual (Jimeng)
    _image("volcengine", "jimeng_high_aes_general_v21_L", "visual", choice(*JIMENG21_SIZES), default_size="512x512",
           note="Jimeng 2.1 text-to-image (old server), CVProcess"),
    _video("volcengine", "jimeng_vgfm_t2v_l20", "visual", {"aspect_ratio": choice(*ASPECT_RATIOS)},
           {"aspect_ratio": "16:9"}, successor="volcengine/jimeng_t2v_v30", options={"video_seconds": 5},
           note="Jimeng S2.0 Pro text-to-video (old server), CVSync2AsyncSubmitTask; 5 s videos"),
    _video("volcengine", "jimeng_t2v_v30", "visual",
           {"aspect_ratio": choice(*ASPECT_RATIOS), "duration": choice(5, 10)},
           {"aspect_ratio": "16:9", "duration": 5}, note="Jimeng 3.0 text-to-video; 5 s = 121 frames, 10 s = 241"),
    # OpenAI
    _image("openai", "dall-e-3", "openai", choice("1024x1024", "1792x1024", "1024x1792"), default_size="1024x1024",
           seed=False, retired="2026-05-12", successor="openai/gpt-image-1.5", note="DALL·E 3 (old server)"),
    _image("openai", "dall-e-2", "openai", choice("256x256", "512x512", "1024x1024"), default_size="1024x1024",
           n=between(1, 10), seed=False, retired="2026-05-12", successor="openai/gpt-image-1-mini"),
    _image("openai", "gpt-image-1", "openai", choice(*GPT_IMAGE_SIZES), default_size="1024x1024", n=between(1, 10),
           seed=False, retired="2026-10-23", successor="openai/gpt-image-1.5"),
    _image("openai", "gpt-image-1-mini", "openai", choice(*GPT_IMAGE_SIZES), default_size="1024x1024",
           n=between(1, 10), default_format="b64_json", seed=False, options={"inline_only": True},
           note="always answers base64; responseFormat url still returns bytes"),
    _image("openai", "gpt-image-1.5", "openai", choice(*GPT_IMAGE_SIZES), default_size="1024x1024",
           n=between(1, 10), default_format="b64_json", seed=False, options={"inline_only": True},
           note="always answers base64; responseFormat url still returns bytes"),
    _image("openai", "gpt-image-2", "openai", multiple_of(16, 3840, 2160), default_size="1024x1024",
           n=between(1, 10), default_format="b64_json", seed=False, options={"inline_only": True},
           note="always answers base64; any WxH in multiples of 16"),
    _text("openai", "gpt-4", "openai", 8192, note="GPT-4 (old server)", successor="openai/gpt-4.1"),
    _text("openai", "gpt-4.1", "openai", 32768),
    _text("openai", "gpt-5", "openai", 128000, temperature=None,
          options={"max_tokens_field": "max_completion_tokens"},
          note="reasoning model: max_completion_tokens, no temperature (unconfirmed)"),
    _video("openai", "sora-2", "openai", {"aspect_ratio": choice("16:9", "9:16"), "duration": choice(4, 8, 12)},
           {"aspect_ratio": "9:16", "duration": 4}, seed=False, retired="2026-09-24",
           successor="volcengine/doubao-seedance-1-0-pro-250528", note="Sora 2 (old server: sora)"),
    _video("openai", "sora-2-pro", "openai", {"aspect_ratio": choice("16:9", "9:16"), "duration": choice(4, 8, 12)},
           {"aspect_ratio": "9:16", "duration": 4}, seed=False, retired="2026-09-24",
           successor="volcengine/doubao-seedance-1-0-pro-250528"),
    # the built-in simulator
    _image("fake", "fake-image", "fake", side_range(16, 2048), default_size="512x512", n=between(1, 4),
           note="a PNG drawn from the prompt; prompt directives drive latency and failures"),
    _video("fake", "fake-video", "fake", {"aspect_ratio": choice(*ASPECT_RATIOS), "duration": between(1, 10)},
           {"aspect_ratio": "16:9", "duration": 2}, note="an H.264 MP4 of a disc crossing the frame; asynchronous job"),
    _text("fake", "fake-text", "fake", 100000, note="deterministic text, at most maxTokens words"),
]

CATALOG: dict[tuple[str, str], ModelSpec] = {m.key: m for m in MODELS}


def providers() -> list[str]:
    """Every provider name the catalog knows, sorted, enabled or not."""
    return sorted({m.provider for m in MODELS})


def models_of(provider: str, type_: TaskType | None = None, *, include_retired: bool = False) -> list[str]:
    """A provider's model names (of one type when given), in catalog order; retired ones only on request."""
    return [m.model for m in MODELS if m.provider == provider and (type_ is None or m.type is type_)
            and (include_retired or not m.retired)]


def lookup(provider: str, model: str) -> ModelSpec | None:
    """The catalog entry of (provider, model), retired ones included; None when it has none."""
    return CATALOG.get((provider, model))


# --- validation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One refused field of a spec: what was given, what is accepted, and the reason word."""

    field: str
    value: Any
    accepted: str
    reason: str = "InvalidSpec"      # or ModelRetired

    def __str__(self) -> str:
        return f"{self.field}: {self.value!r} is not accepted; {self.accepted}"


class InvalidSpecError(ValueError):
    """The spec asks for something the catalog does not offer. `problems` lists each one."""

    reason = "InvalidSpec"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class ModelRetiredError(InvalidSpecError):
    """The spec asks for a model its vendor retired; the message names the successor."""

    reason = "ModelRetired"


class Target(NamedTuple):
    """One (provider, model) to try, with the parameters resolved for it."""

    model: ModelSpec
    params: dict[str, Any]

    @property
    def provider(self) -> str:
        """The provider name to look up in the registry."""
        return self.model.provider


def _check_model(provider: str, model: str, type_: TaskType, where: str, enabled: set[str] | None,
                 problems: list[Problem]) -> ModelSpec | None:
    known = providers()
    if provider not in known:
        problems.append(Problem(f"{where}provider", provider, f"known providers: {', '.join(known)}"))
        return None
    if enabled is not None and provider not in enabled:
        problems.append(Problem(f"{where}provider", provider,
                                f"enabled providers (GENTASK_PROVIDERS): {', '.join(sorted(enabled)) or 'none'}"))
        return None
    spec = lookup(provider, model)
    if spec is None or spec.type is not type_:
        names = models_of(provider, type_)
        article = "an" if spec is not None and spec.type is TaskType.IMAGE else "a"
        what = "unknown model" if spec is None else f"it is {article} {spec.type.value} model"
        problems.append(Problem(f"{where}model", model,
                                f"{what}; {type_.value} models of {provider}: {', '.join(names)}"))
        return None
    if spec.retired:
        problems.append(Problem(f"{where}model", model,
                                f"{provider} retired it on {spec.retired}; use {spec.successor} instead",
                                reason="ModelRetired"))
        return None
    return spec


def resolve_params(spec: ModelSpec, params: Params, whose: str = "") -> tuple[dict[str, Any], list[Problem]]:
    """The model's defaults overlaid with the given params; problems for refused ones.

    `whose` tells which entry of the spec the model is (e.g. "fallbacks[0] "), for the message.
    """
    given = params.model_dump(exclude_none=True)
    problems = []
    for name, value in given.items():
        rule = spec.params.get(name)
        if rule is None:
            accepted = "parameters " + ", ".join(to_camel(n) for n in spec.params) if spec.params else "no parameters"
        elif not rule.check(value):
            accepted = rule.accepted
        else:
            continue
        problems.append(Problem(f"spec.params.{to_camel(name)}", value,
                                f"{whose}{spec.provider}/{spec.model} accepts {accepted}"))
    return {**spec.defaults, **given}, problems


def validate_spec(spec: GenerationTaskSpec, *, enabled: Iterable[str] | None = None) -> list[Target]:
    """The targets to try in order (primary, then fallbacks); InvalidSpecError naming every problem."""
    enabled_set = set(enabled) if enabled is not None else None
    problems: list[Problem] = []
    targets: list[Target] = []
    candidates = [("spec.", spec.provider, spec.model)]
    candidates += [(f"spec.fallbacks[{i}].", f.provider, f.model) for i, f in enumerate(spec.fallbacks)]
    seen: set[tuple[str, str]] = set()
    for where, provider, model in candidates:
        if (provider, model) in seen:
            problems.append(Problem(f"{where}model", f"{provider}/{model}", "each (provider, model) at most once"))
            continue
        seen.add((provider, model))
        entry = _check_model(provider, model, spec.type, where, enabled_set, problems)
        if entry is None:
            continue
        resolved, bad = resolve_params(entry, spec.params, "" if where == "spec." else where[len("spec."):-1] + " ")
        problems += bad
        targets.append(Target(entry, resolved))
    if problems:
        error = ModelRetiredError if any(p.reason == "ModelRetired" for p in problems) else InvalidSpecError
        raise error(problems)
    return targets


__all__ = [
    "CATALOG", "MODELS", "InvalidSpecError", "ModelRetiredError", "ModelSpec", "Problem", "Rule", "Target",
    "lookup", "models_of", "providers", "resolve_params", "validate_spec",
]
