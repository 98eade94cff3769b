"""Every vendor error code of the reference, sent by the local servers in the vendor's own error body,
comes back as one class of the taxonomy with the vendor's code and request id."""

from __future__ import annotations

import socket

import pytest

from gentask.domain.catalog import lookup
from gentask.domain.reasons import REASONS, RETRYABLE_REASONS
from gentask.providers import (
    GenerationFailed,
    GenerationRequest,
    JobState,
    ProviderError,
    generate,
    registry_from_settings,
)
from gentask.providers.errors import parse_retry_after

from .conftest import task

# Ark (reference §2.1): code, HTTP status, reason
ARK = [
    ("MissingParameter", 400, "ProviderBadRequest"), ("MissingParameter.prompt", 400, "ProviderBadRequest"),
    ("InvalidParameter", 400, "ProviderBadRequest"), ("InvalidParameter.OversizedImage", 400, "ProviderBadRequest"),
    ("InvalidParameter.UnsupportedImageFormat", 400, "ProviderBadRequest"),
    ("InvalidEndpoint.ClosedEndpoint", 400, "ModelUnavailable"),
    ("SensitiveContentDetected", 400, "ContentRejected"),
    ("SensitiveContentDetected.SevereViolation", 400, "ContentRejected"),
    ("SensitiveContentDetected.Violence", 400, "ContentRejected"),
    ("InputTextSensitiveContentDetected", 400, "ContentRejected"),
    ("InputImageSensitiveContentDetected", 400, "ContentRejected"),
    ("InputImageSensitiveContentDetected.PrivacyInformation", 400, "ContentRejected"),
    ("InputVideoSensitiveContentDetected", 400, "ContentRejected"),
    ("OutputTextSensitiveContentDetected", 400, "ContentRejected"),
    ("OutputImageSensitiveContentDetected", 400, "ContentRejected"),
    ("OutputVideoSensitiveContentDetected", 400, "ContentRejected"),
    ("InputTextRiskDetection", 400, "ContentRejected"), ("OutputImageRiskDetection", 400, "ContentRejected"),
    ("AuthenticationError", 401, "AuthenticationFailed"),
    ("AccountOverdueError", 403, "QuotaExceeded"), ("AccessDenied", 403, "AuthenticationFailed"),
    ("InvalidEndpointOrModel.NotFound", 404, "ModelUnavailable"),
    ("InvalidEndpointOrModel.ModelIDAccessDisabled", 404, "ModelUnavailable"),
    ("ModelNotOpen", 404, "ModelUnavailable"),
    ("RateLimitExceeded.EndpointRPMExceeded", 429, "ProviderRateLimited"),
    ("RateLimitExceeded.EndpointTPMExceeded", 429, "ProviderRateLimited"),
    ("ModelAccountRpmRateLimitExceeded", 429, "ProviderRateLimited"),
    ("ModelAccountTpmRateLimitExceeded", 429, "ProviderRateLimited"),
    ("ModelAccountIpmRateLimitExceeded", 429, "ProviderRateLimited"),
    ("APIAccountRpmRateLimitExceeded", 429, "ProviderRateLimited"), ("ServerOverloaded", 429, "ProviderOverloaded"),
    ("RequestBurstTooFast", 429, "ProviderRateLimited"), ("InflightBatchsizeExceeded", 429, "ProviderRateLimited"),
    ("AccountRateLimitExceeded", 429, "ProviderRateLimited"),
    ("QuotaExceeded", 429, "QuotaExceeded"), ("SetLimitExceeded", 429, "QuotaExceeded"),
    ("InternalServiceError", 500, "ProviderOverloaded"),
    ("SomethingNew", 503, "ProviderOverloaded"),          # an unknown code falls back to the HTTP status
]

# Visual/Jimeng (reference §3.4): code, HTTP status, reason, retryable
VISUAL = [
    (50411, 400, "ContentRejected", False), (50412, 400, "ContentRejected", False),
    (50413, 400, "ContentRejected", False), (50511, 400, "ContentRejected", True),
    (50512, 400, "ContentRejected", False), (50518, 400, "ContentRejected", False),
    (50519, 400, "ContentRejected", True), (50520, 400, "ProviderError", False), (50521, 400, "ProviderError", False),
    (50522, 400, "ProviderError", False), (50429, 429, "ProviderRateLimited", True),
    (50430, 429, "ProviderRateLimited", True), (50500, 500, "ProviderError", False),
    (50501, 500, "ProviderError", False),
    (30403, 200, "ModelUnavailable", False), (50400, 400, "AuthenticationFailed", False),
    (50200, 400, "ProviderBadRequest", False),
    ("SignatureDoesNotMatch", 401, "AuthenticationFailed", False),
    ("FlowLimitExceeded", 429, "ProviderRateLimited", True),
    ("InternalError", 500, "ProviderOverloaded", True),
]

# OpenAI (reference §4.1): code, HTTP status, reason
OPENAI = [
    ("content_policy_violation", 400, "ContentRejected"), ("moderation_blocked", 400, "ContentRejected"),
    ("invalid_size", 400, "ProviderBadRequest"), (None, 400, "ProviderBadRequest"),
    ("invalid_api_key", 401, "AuthenticationFailed"), ("insufficient_quota", 429, "QuotaExceeded"),
    ("rate_limit_exceeded", 429, "ProviderRateLimited"), ("model_not_found", 404, "ModelUnavailable"),
    (None, 408, "ProviderTimeout"), (None, 409, "ProviderOverloaded"), (None, 500, "ProviderOverloaded"),
    (None, 503, "ProviderOverloaded"),
]


async def failure_of(spec, registry, policy) -> ProviderError:
    with pytest.raises(GenerationFailed) as caught:
        await generate(spec, registry=registry, policy=policy)
    return caught.value.error


@pytest.mark.parametrize("code, status, reason", ARK, ids=[c for c, _, _ in ARK])
async def test_ark_error_codes(vendors, registry, policy, code, status, reason):
    vendors.ark.inject("error", status=status, code=code, message="refused")
    error = await failure_of(task("image", "volcengine", "doubao-seedream-3-0-t2i-250415"), registry, policy)
    assert (error.reason, error.code, error.status_code) == (reason, code, status)
    assert error.retryable is (reason in RETRYABLE_REASONS) and reason in REASONS
    assert error.request_id.startswith("0217") and error.provider == "volcengine"
    assert vendors.ark.count("POST") == 1          # spec.retries is 0 here


@pytest.mark.parametrize("code, status, reason, retryable", VISUAL, ids=[str(c) for c, *_ in VISUAL])
async def test_visual_error_codes(vendors, registry, policy, code, status, reason, retryable):
    vendors.visual.inject("error", status=status, code=code, message="refused")
    error = await failure_of(task("image", "volcengine", "jimeng_high_aes_general_v21_L"), registry, policy)
    assert (error.reason, error.code, error.status_code, error.retryable) == (reason, str(code), status, retryable)
    assert error.request_id and reason in REASONS


@pytest.mark.parametrize("code, status, reason", OPENAI, ids=[f"{c}-{s}" for c, s, _ in OPENAI])
async def test_openai_error_codes(vendors, registry, policy, code, status, reason):
    vendors.openai.inject("error", status=status, code=code, message="refused")
    error = await failure_of(task("text", "openai", "gpt-4.1"), registry, policy)
    assert (error.reason, error.status_code) == (reason, status)
    assert error.code == code or code is None
    assert error.request_id.startswith("req_")


@pytest.mark.parametrize("server, spec", [
    ("ark", task("text", "volcengine", "doubao-seed-1-6-250615")),
    ("visual", task("image", "volcengine", "jimeng_high_aes_general_v21_L")),
    ("openai", task("image", "openai", "gpt-image-1-mini")),
])
@pytest.mark.parametrize("kind, reason", [("rate_limited", "ProviderRateLimited"), ("server_error", "ProviderError"),
                                          ("content_rejected", "ContentRejected"), ("auth", "AuthenticationFailed")])
async def test_named_faults_arrive_as_each_vendor_sends_them(vendors, registry, policy, server, spec, kind, reason):
    getattr(vendors, server).inject(kind)
    error = await failure_of(spec, registry, policy)
    # Jimeng's 50500 is "internal error, do not retry" per the vendor; the others' 5xx are retryable
    expected = "ProviderOverloaded" if kind == "server_error" and server != "visual" else reason
    assert error.reason == expected


async def test_wrong_keys_are_refused_as_each_vendor_refuses_them(vendors, policy):
    settings = vendors.settings(ai_timeout=2, ark_api_key="wrong", volcengine_secret_key="wrong-secret",
                                openai_api_key="sk-wrong-key-123456")
    async with registry_from_settings(settings) as registry:
        ark = await failure_of(task("text", "volcengine", "doubao-pro-4k"), registry, policy)
        visual = await failure_of(task("image", "volcengine", "jimeng_high_aes_general_v21_L"), registry, policy)
        openai = await failure_of(task("text", "openai", "gpt-4"), registry, policy)
    assert (ark.reason, ark.code, ark.status_code) == ("AuthenticationFailed", "AuthenticationError", 401)
    # recomputed from the secret
    assert (visual.reason, visual.code) == ("AuthenticationFailed", "SignatureDoesNotMatch")
    assert (openai.reason, openai.code) == ("AuthenticationFailed", "invalid_api_key")


async def test_a_missing_key_fails_before_any_request(vendors, policy):
    settings = vendors.settings(ai_timeout=2, ark_api_key=None, volcengine_access_key=None)
    async with registry_from_settings(settings) as registry:
        ark = await failure_of(task("image", "volcengine", "doubao-seedream-3-0-t2i-250415"), registry, policy)
        visual = await failure_of(task("video", "volcengine", "jimeng_t2v_v30"), registry, policy)
    assert ark.reason == visual.reason == "AuthenticationFailed"
    assert "ARK_API_KEY is not set" in str(ark) and "VOLCENGINE_ACCESS_KEY" in str(visual)
    assert vendors.ark.count("POST") == vendors.visual.count("POST") == 0


@pytest.mark.parametrize("provider, model, params, param", [
    ("volcengine", "doubao-seedream-3-0-t2i-250415", {"size": "100x100"}, "size"),
    ("volcengine", "doubao-seedance-1-0-pro-250528", {"duration": 30}, "duration"),
    ("openai", "gpt-image-1.5", {"size": "640x480"}, "size"),
])
async def test_the_servers_validate_bodies_as_the_vendor_does(vendors, registry, provider, model, params, param):
    entry = lookup(provider, model)
    request = GenerationRequest(entry, "x", {**entry.defaults, **params})
    call = registry.get(provider).submit if entry.asynchronous else registry.get(provider).generate
    with pytest.raises(ProviderError) as caught:
        await call(request)
    assert caught.value.reason == "ProviderBadRequest" and param in str(caught.value)


async def test_a_dropped_connection_and_a_closed_port_are_unreachable(vendors, registry, policy):
    vendors.openai.inject("drop")
    dropped = await failure_of(task("text", "openai", "gpt-4"), registry, policy)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = vendors.settings(ai_timeout=2, ark_base_url=f"http://127.0.0.1:{closed_port}/api/v3")
    async with registry_from_settings(settings) as other:
        refused = await failure_of(task("text", "volcengine", "doubao-pro-4k"), other, policy)
    assert dropped.reason == refused.reason == "ProviderUnreachable"
    assert dropped.retryable and refused.retryable


async def test_a_failed_ark_video_job_keeps_the_vendors_code(vendors, registry, policy):
    vendors.ark.inject("job_failed", path="/contents/generations/tasks", code="OutputVideoSensitiveContentDetected",
                       message="the video may contain sensitive content")
    error = await failure_of(task("video", "volcengine", "doubao-seedance-1-0-pro-250528", retries=2), registry, policy)
    assert (error.reason, error.code) == ("ContentRejected", "OutputVideoSensitiveContentDetected")
    assert vendors.ark.count("POST", "/tasks") == 1            # permanent: not submitted again


async def test_a_failed_openai_video_job_keeps_the_vendors_code(vendors, registry):
    vendors.openai.inject("job_failed", path="/videos", code="moderation_blocked")
    entry = lookup("openai", "sora-2-pro")
    request = GenerationRequest(entry, "x", entry.defaults)
    provider = registry.get("openai")
    video_id = await provider.submit(request)
    status = None
    while status is None or not status.state.done:
        status = await provider.poll(request, video_id)
    assert status.state is JobState.FAILED and status.error.reason == "ContentRejected"


def test_retry_after_headers():
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert 0 <= parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) <= 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
