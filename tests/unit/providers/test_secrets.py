"""Secrets never reach a log record, an exception or a result: every vendor call, successful and
failing, run at DEBUG with known keys, everything rendered and searched."""

from __future__ import annotations

import dataclasses
import logging
import traceback

import pytest

from gentask.domain.catalog import lookup
from gentask.logs import JsonFormatter
from gentask.providers import GenerationFailed, GenerationRequest, ProviderError, generate, registry_from_settings

from .conftest import task

SUCCESSES = [
    task("image", "volcengine", "doubao-seedream-3-0-t2i-250415"),
    task("image", "volcengine", "doubao-seedream-3-0-t2i-250415", params={"responseFormat": "b64_json"}),
    task("text", "volcengine", "doubao-pro-4k"),
    task("video", "volcengine", "doubao-seedance-1-0-pro-250528"),
    task("image", "volcengine", "jimeng_high_aes_general_v21_L"),
    task("video", "volcengine", "jimeng_vgfm_t2v_l20"),
    task("image", "openai", "gpt-image-1.5"),
    task("text", "openai", "gpt-4"),
    task("image", "fake", "fake-image", params={"size": "64x64"}),
]
FAILURES = [  # (server, fault kind, spec)
    (server, kind, spec)
    for server, spec in [("ark", task("image", "volcengine", "doubao-seedream-3-0-t2i-250415", retries=1)),
                         ("ark", task("video", "volcengine", "doubao-seedance-1-0-pro-250528")),
                         ("visual", task("image", "volcengine", "jimeng_high_aes_general_v21_L", retries=1)),
                         ("visual", task("video", "volcengine", "jimeng_t2v_v30")),
                         ("openai", task("text", "openai", "gpt-4.1", retries=1))]
    for kind in ("rate_limited", "server_error", "content_rejected", "auth", "bad_request", "drop")
]


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def debug_records():
    root = logging.getLogger()
    capture, level = Capture(), root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture.records
    root.removeHandler(capture)
    root.setLevel(level)


def rendered(value: object) -> list[str]:
    if isinstance(value, BaseException):
        texts = [str(value), repr(value), "".join(traceback.format_exception(value))]
        texts += [repr(v) for v in vars(value).values()]
        if isinstance(value, GenerationFailed):
            texts += rendered(value.error) + [repr(f) for f in value.failures]
        return texts
    if dataclasses.is_dataclass(value):
        return [repr(value)] + [repr(dataclasses.asdict(value))]
    return [repr(value)]


async def test_no_secret_in_logs_exceptions_or_results(vendors, policy, debug_records):
    secrets = list(vendors.keys.values())
    seen: list[str] = []
    async with registry_from_settings(vendors.settings(ai_timeout=1)) as registry:
        seen += [repr(registry.get(name)) for name in registry.names()]
        for spec in SUCCESSES:
            seen += rendered(await generate(spec, registry=registry, policy=policy))
        for model in ("dall-e-3", "sora-2"):            # the retired wire formats, called directly
            entry = lookup("openai", model)
            request = GenerationRequest(entry, "x", entry.defaults)
            provider = registry.get("openai")
            if entry.asynchronous:
                video_id = await provider.submit(request)
                seen += rendered(await provider.poll(request, video_id))
            else:
                seen += rendered(await provider.generate(request))
        for server, kind, spec in FAILURES:
            vendors.reset()
            getattr(vendors, server).inject(kind, times=-1)
            with pytest.raises(GenerationFailed) as caught:
                await generate(spec, registry=registry, policy=policy)
            seen += rendered(caught.value)
        # a vendor that echoes the key verbatim in its error message
        vendors.reset()
        vendors.ark.inject("error", status=401, code="AuthenticationError",
                           message=f"the key {vendors.keys['ark_api_key']} is not valid")
        with pytest.raises(GenerationFailed) as echoed:
            await generate(task("text", "volcengine", "doubao-pro-4k"), registry=registry, policy=policy)
        seen += rendered(echoed.value)
        assert "the key *** is not valid" in str(echoed.value)

    wrong = vendors.settings(ai_timeout=1, ark_api_key=secrets[0][::-1], volcengine_secret_key="x" + secrets[2],
                             openai_api_key=secrets[3] + "x")
    async with registry_from_settings(wrong) as registry:
        for spec in (SUCCESSES[2], SUCCESSES[4], SUCCESSES[7]):
            with pytest.raises(GenerationFailed) as caught:
                await generate(spec, registry=registry, policy=policy)
            seen += rendered(caught.value)
            secrets += [wrong.ark_api_key.get_secret_value(), wrong.volcengine_secret_key.get_secret_value(),
                        wrong.openai_api_key.get_secret_value()]

    formatter = JsonFormatter()
    for record in debug_records:
        seen += [formatter.format(record), repr(record.__dict__)]
    assert any(r.name == "gentask.providers" and r.levelno == logging.DEBUG for r in debug_records)
    assert any(r.name.startswith(("httpx", "httpcore")) for r in debug_records)
    assert len(seen) > 500
    for secret in set(secrets):
        leaks = [text for text in seen if secret in text]
        assert not leaks, f"a secret leaked into: {leaks[0][:300]}"


def test_provider_error_text_carries_codes_and_ids_but_no_secret():
    error = ProviderError("refused", provider="openai", model="gpt-4", code="invalid_api_key", status_code=401,
                          request_id="req_1")
    assert str(error) == "refused (provider=openai, model=gpt-4, code=invalid_api_key, status=401, request_id=req_1)"
