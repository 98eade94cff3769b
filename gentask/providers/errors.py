"""One error taxonomy for every vendor, and the tables that map each vendor's codes onto it.

    ProviderError                      reason ProviderError        permanent
    ├── RateLimitedError               ProviderRateLimited         retryable
    ├── OverloadedError                ProviderOverloaded          retryable (overloaded, 5xx)
    ├── ProviderTimeoutError           ProviderTimeout             retryable (no answer within AI_TIMEOUT)
    ├── UnreachableError               ProviderUnreachable         retryable (connection refused, reset, DNS)
    ├── BadRequestError                ProviderBadRequest          permanent
    ├── ContentRejectedError           ContentRejected             permanent (Jimeng output review: retryable)
    ├── AuthenticationError            AuthenticationFailed        permanent
    ├── QuotaExceededError             QuotaExceeded               permanent (quota, spending limit, arrears)
    ├── ModelUnavailableError          ModelUnavailable            permanent
    └── DeadlineExceededError          DeadlineExceeded            permanent (the task's own deadline)

Each error keeps the vendor's code, HTTP status and request id; `reason` is one word of
gentask.domain.reasons.REASONS. The mapping is looked up in this order: the vendor's code table
(exact code, then the code with trailing ".Detail" parts dropped, then known suffixes), then the
HTTP status (`error_class_for_status`, the one fallback shared by all vendors).

Messages never carry credentials: the HTTP layer passes every known secret to `redact` before an
error is built, so a vendor that echoes a key back does not leak it into logs or task status.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from gentask.domain.task import ProviderFailure


class ProviderError(Exception):
    """A vendor call failed. `retryable` says whether the same call may succeed later."""

    reason: ClassVar[str] = "ProviderError"
    default_retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, provider: str | None = None, model: str | None = None,
                 code: str | int | None = None, status_code: int | None = None, request_id: str | None = None,
                 retry_after: float | None = None, retryable: bool | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.code = None if code is None else str(code)
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after
        self.param = param or None         # the request field the vendor blames
        self.usage: dict[str, int] = {}    # what the vendor reports it billed (a vendor job that ran, then failed)
        self.attempt_recorded = False      # the runner has counted this failure's attempt (and its cost)
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        details = [f"{k}={v}" for k, v in (("provider", self.provider), ("model", self.model), ("code", self.code),
                                            ("param", self.param), ("status", self.status_code),
                                            ("request_id", self.request_id)) if v]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def failure(self) -> ProviderFailure:
        """The record a task keeps of this failure (status.providerFailures)."""
        return ProviderFailure(provider=self.provider or "", model=self.model or "", reason=self.reason,
                               message=str(self))


class RateLimitedError(ProviderError):
    """The vendor throttled the call (QPS, RPM, TPM, concurrency); retried after Retry-After or a backoff."""

    reason = "ProviderRateLimited"
    default_retryable = True


class OverloadedError(ProviderError):
    """The vendor is busy or failed internally (5xx, overloaded, expired job); worth another try."""

    reason = "ProviderOverloaded"
    default_retryable = True


class ProviderTimeoutError(ProviderError):
    """No answer within AI_TIMEOUT; the same call may succeed later."""

    reason = "ProviderTimeout"
    default_retryable = True


class UnreachableError(ProviderError):
    """The vendor could not be reached (connection refused or reset, DNS); retried."""

    reason = "ProviderUnreachable"
    default_retryable = True


class BadRequestError(ProviderError):
    """The vendor refused the request's parameters; sending it again cannot help."""

    reason = "ProviderBadRequest"


class ContentRejectedError(ProviderError):
    """The vendor's content review refused the prompt or the output; permanent unless the code says otherwise."""

    reason = "ContentRejected"


class AuthenticationError(ProviderError):
    """The credentials are missing, wrong or not allowed this call; fix the key, not the task."""

    reason = "AuthenticationFailed"


class QuotaExceededError(ProviderError):
    """The account's quota, spending limit or balance is used up; retries would fail the same way."""

    reason = "QuotaExceeded"


class ModelUnavailableError(ProviderError):
    """The model does not exist, is closed, or is not enabled for the account."""

    reason = "ModelUnavailable"


class DeadlineExceededError(ProviderError):
    """The task's own timeoutSeconds ran out (not the vendor's fault, hence not retried)."""

    reason = "DeadlineExceeded"


ErrorKind = tuple[type[ProviderError], bool | None]   # class, and a retryable override (None: the class's)


def error_class_for_status(status: int | None) -> type[ProviderError]:
    """The class for an HTTP status when the vendor's code says nothing more."""
    if status is None:
        return ProviderError
    if status in (400, 413, 415, 422):
        return BadRequestError
    if status in (401, 403):
        return AuthenticationError
    if status == 404:
        return ModelUnavailableError
    if status == 408:
        return ProviderTimeoutError
    if status == 409:
        return OverloadedError       # a conflict, as the vendors' SDKs retry it
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return OverloadedError
    return ProviderError


# --- Volcengine Ark (https://www.volcengine.com/docs/82379/1299023) -------------------------------

_R, _O, _B, _C = RateLimitedError, OverloadedError, BadRequestError, ContentRejectedError
_A, _Q, _M = AuthenticationError, QuotaExceededError, ModelUnavailableError

ARK_CODES: dict[str, type[ProviderError]] = {
    "MissingParameter": _B, "InvalidParameter": _B,
    "InvalidEndpoint.ClosedEndpoint": _M,
    "SensitiveContentDetected": _C, "InputTextSensitiveContentDetected": _C, "InputImageSensitiveContentDetected": _C,
    "InputVideoSensitiveContentDetected": _C, "OutputTextSensitiveContentDetected": _C,
    "OutputImageSensitiveContentDetected": _C, "OutputVideoSensitiveContentDetected": _C,
    "AuthenticationError": _A, "AccessDenied": _A, "AccountOverdueError": _Q,
    "InvalidEndpointOrModel.NotFound": _M, "InvalidEndpointOrModel.ModelIDAccessDisabled": _M, "ModelNotOpen": _M,
    "RateLimitExceeded.EndpointRPMExceeded": _R, "RateLimitExceeded.EndpointTPMExceeded": _R,
    "ModelAccountRpmRateLimitExceeded": _R, "ModelAccountTpmRateLimitExceeded": _R,
    "ModelAccountIpmRateLimitExceeded": _R, "APIAccountRpmRateLimitExceeded": _R, "RequestBurstTooFast": _R,
    "InflightBatchsizeExceeded": _R, "AccountRateLimitExceeded": _R, "ServerOverloaded": _O,
    "QuotaExceeded": _Q, "SetLimitExceeded": _Q,
    "InternalServiceError": _O,
}
ARK_SUFFIXES: dict[str, type[ProviderError]] = {"RiskDetection": _C, "SensitiveContentDetected": _C}


def _ark_class(code: str, status: int | None) -> type[ProviderError]:
    parts = code.split(".")
    for i in range(len(parts), 0, -1):
        found = ARK_CODES.get(".".join(parts[:i]))
        if found:
            return found
    for suffix, cls in ARK_SUFFIXES.items():
        if parts[0].endswith(suffix):
            return cls
    return error_class_for_status(status)


def ark_error(status: int | None, body: Any, headers: Mapping[str, str] | None = None) -> ProviderError:
    """From an Ark error body `{"error": {"code", "message", "param", "type"}}` (or a task's `error`)."""
    error = body.get("error", body) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    message = str(error.get("message") or f"HTTP {status}")
    cls = _ark_class(code, status) if code else error_class_for_status(status)
    request_id = _header(headers, "x-request-id") or _request_id_in(message)
    return cls(message, code=code or None, status_code=status, request_id=request_id,
               retry_after=parse_retry_after(headers), param=error.get("param"))


# --- Volcengine Visual / Jimeng (https://www.volcengine.com/docs/6444/69728) -------------------------

VISUAL_OK = 10000
VISUAL_CODES: dict[int, ErrorKind] = {
    50411: (_C, None), 50412: (_C, None), 50413: (_C, None),          # input image/text review, sensitive term
    50511: (_C, True),                                                # output image review: worth another try
    50512: (_C, None), 50518: (_C, None), 50519: (_C, True),          # output text; copyrighted input / output
    50520: (ProviderError, None), 50521: (ProviderError, None), 50522: (ProviderError, None),  # review service
    50429: (_R, None), 50430: (_R, None),                             # QPS, concurrency
    50500: (ProviderError, None), 50501: (ProviderError, None),       # internal; the vendor says not to retry
    30403: (_M, None),                                                # NoFeatAuth: not enabled for the account
    50400: (_A, None),                                                # Access Denied (unconfirmed)
}
# ResponseMetadata.Error.Code of the OpenAPI gateway (signature, credentials, throttling)
VISUAL_GATEWAY_CODES: dict[str, ErrorKind] = {
    "SignatureDoesNotMatch": (_A, None), "InvalidAccessKey": (_A, None), "InvalidCredential": (_A, None),
    "MissingAuthenticationToken": (_A, None), "InvalidAuthorization": (_A, None), "AccessDenied": (_A, None),
    "InvalidSecretToken": (_A, None), "RequestExpired": (_A, None),
    "FlowLimitExceeded": (_R, None), "RequestLimitExceeded": (_R, None),
    "InternalError": (_O, None), "ServiceUnavailableTemp": (_O, None), "InternalServiceTimeout": (_O, None),
    "InvalidActionOrVersion": (_B, None), "MissingParameter": (_B, None), "InvalidParameter": (_B, None),
}


def visual_error(status: int | None, body: Any, headers: Mapping[str, str] | None = None) -> ProviderError:
    """From either Visual envelope: `{code, message, request_id, ...}` or `{ResponseMetadata: {Error}}`."""
    body = body if isinstance(body, dict) else {}
    meta = body.get("ResponseMetadata")
    retry_after = parse_retry_after(headers)
    if isinstance(meta, dict) and isinstance(meta.get("Error"), dict):
        err = meta["Error"]
        code = str(err.get("Code") or "")
        cls, retryable = VISUAL_GATEWAY_CODES.get(code, (error_class_for_status(status), None))
        return cls(str(err.get("Message") or code or f"HTTP {status}"), code=code or None, status_code=status,
                   request_id=meta.get("RequestId"), retry_after=retry_after, retryable=retryable)
    raw = body.get("code", body.get("status"))
    try:
        code_n: int | None = int(raw)
    except (TypeError, ValueError):
        code_n = None
    cls, retryable = VISUAL_CODES.get(code_n or 0, (error_class_for_status(status), None))
    return cls(str(body.get("message") or f"HTTP {status}"), code=code_n, status_code=status,
               request_id=body.get("request_id") or _header(headers, "x-tt-logid"), retry_after=retry_after,
               retryable=retryable)


# --- OpenAI ---------------------------------------------------------------------------------------

OPENAI_CODES: dict[str, type[ProviderError]] = {
    "content_policy_violation": _C, "moderation_blocked": _C,
    "insufficient_quota": _Q, "billing_hard_limit_reached": _Q,
    "invalid_api_key": _A, "model_not_found": _M,
    "rate_limit_exceeded": _R, "server_error": _O,
    "invalid_size": _B, "unknown_parameter": _B, "invalid_value": _B,
}
OPENAI_TYPES: dict[str, type[ProviderError]] = {
    "insufficient_quota": _Q, "authentication_error": _A, "rate_limit_error": _R, "requests": _R, "tokens": _R,
    "server_error": _O,
}


def openai_error(status: int | None, body: Any, headers: Mapping[str, str] | None = None) -> ProviderError:
    """From `{"error": {"message", "type", "param", "code"}}`; a video job's `error` has code/message only."""
    error = body.get("error", body) if isinstance(body, dict) else {}
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "")
    type_ = str(error.get("type") or "")
    cls = OPENAI_CODES.get(code) or OPENAI_TYPES.get(type_) or error_class_for_status(status)
    return cls(str(error.get("message") or f"HTTP {status}"), code=code or type_ or None, status_code=status,
               request_id=_header(headers, "x-request-id"), retry_after=parse_retry_after(headers),
               param=error.get("param"))


# --- helpers ----------------------------------------------------------------------------------------

def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return value or None


_REQUEST_ID = re.compile(r"Request id:\s*([0-9A-Za-z-]+)")


def _request_id_in(message: str) -> str | None:
    match = _REQUEST_ID.search(message)
    return match.group(1) if match else None


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None when absent or bad."""
    ms = _header(headers, "retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = _header(headers, "retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # here: an HTTP-date Retry-After is rare, and a worker pod pays every import in CPU

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def redact(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret replaced by ***, so that a vendor echoing a key cannot leak it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


__all__ = [
    "ARK_CODES", "OPENAI_CODES", "VISUAL_CODES", "VISUAL_GATEWAY_CODES", "AuthenticationError", "BadRequestError",
    "ContentRejectedError", "DeadlineExceededError", "ModelUnavailableError", "OverloadedError", "ProviderError",
    "ProviderTimeoutError", "QuotaExceededError", "RateLimitedError", "UnreachableError", "ark_error",
    "error_class_for_status", "openai_error", "parse_retry_after", "redact", "visual_error",
]
