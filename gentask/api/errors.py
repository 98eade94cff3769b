"""Errors in the old server's envelope: {success: false, data: null, message, errors?}.

Every failure the API can answer is an APIError subclass with its HTTP status. The handlers
installed by `install_handlers` turn them, FastAPI's validation errors and Starlette's HTTP
errors into the envelope; anything else is logged and answered 500 (the tests look for none).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gentask.api.schemas import ErrorEnvelope, FieldError

log = logging.getLogger("gentask.api")

VALUE_ECHO_MAX = 200


class APIError(Exception):
    """A failure the API answers with its HTTP status and the error envelope."""

    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, *, errors: list[dict[str, Any]] | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)
        self.errors = errors
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))


class BadRequest(APIError):
    """400: malformed JSON, an unknown provider or model."""

    status = 400
    default_message = "bad request"


class Unauthorized(APIError):
    """401: no API key, or an unknown one."""

    status = 401
    default_message = "missing or unknown API key: send Authorization: Bearer <key> or X-API-Key: <key>"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="gentask"'})


class Forbidden(APIError):
    """403: acting for another user without being admin."""

    status = 403
    default_message = "forbidden"


class NotFound(APIError):
    """404: no such task, not the caller's, no such artifact."""

    status = 404
    default_message = "not found"


class Conflict(APIError):
    """409: an Idempotency-Key reused with another body; cancelling a finished task."""

    status = 409
    default_message = "conflict"


class PayloadTooLarge(APIError):
    """413: a body over GENTASK_API_MAX_BODY_BYTES."""

    status = 413
    default_message = "request body too large"


class Unprocessable(APIError):
    """422: a field out of bounds or a parameter the model does not accept."""

    status = 422
    default_message = "invalid request"


class TooManyRequests(APIError):
    """429: a limit; Retry-After says when to come back."""

    status = 429
    default_message = "too many requests"


class Unavailable(APIError):
    """503: the cluster or MongoDB unreachable; Retry-After says when to come back."""

    status = 503
    default_message = "service unavailable"


def error_body(message: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The error envelope as JSON: {success: false, data: null, message, errors?}."""
    fields = None if errors is None else [FieldError.model_validate(e) for e in errors]
    body = ErrorEnvelope(message=message, errors=fields).model_dump(mode="json")
    if errors is None:
        del body["errors"]
    return body


def error_response(status: int, message: str, errors: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """Every error answer of the API: the envelope, its status and headers (Retry-After, ...)."""
    return JSONResponse(error_body(message, errors), status_code=status, headers=headers)


def echo(value: Any) -> Any:
    """A value safe to send back: JSON types only, long strings cut."""
    if isinstance(value, str):
        return value if len(value) <= VALUE_ECHO_MAX else value[:VALUE_ECHO_MAX] + "…"
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if isinstance(value, (list, tuple)):
        return [echo(v) for v in list(value)[:20]]
    if isinstance(value, dict):
        return {str(k)[:VALUE_ECHO_MAX]: echo(v) for k, v in list(value.items())[:20]}
    if isinstance(value, bytes):
        return echo(value.decode("utf-8", errors="replace"))
    return echo(str(value))


def _accepted(err: dict[str, Any]) -> str:
    """What would have been accepted, in words, from one pydantic error."""
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "string_too_short":
        return f"a string of at least {ctx.get('min_length')} character(s)"
    if kind == "string_too_long":
        return f"a string of at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"a string matching {ctx.get('pattern')}"
    if kind in ("literal_error", "enum"):
        return f"one of {ctx.get('expected')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        limit = next(iter(ctx.values()), "")
        return f"a number {bound} {limit}"
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} item(s)"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} item(s)"
    if kind.startswith("int_"):
        return "an integer"
    if kind.startswith("float_") or kind == "finite_number":
        return "a number"
    if kind.startswith("bool_"):
        return "true or false"
    if kind.startswith("string_"):
        return "a string"
    if kind in ("list_type", "tuple_type"):
        return "a list"
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return "a JSON object"
    return str(err.get("msg", "a valid value"))


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'fallbacks', 0, 'model') -> 'fallbacks[0].model'; ('body',) -> 'body'."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as the envelope's entries: field, value given, what is accepted, message."""
    return [{"field": field_name(e.get("loc", ())),
             "value": echo(e.get("input")) if e.get("type") != "missing" else None,
             "accepted": _accepted(e), "message": str(e.get("msg", ""))} for e in errors]


def _summary(items: list[dict[str, Any]]) -> str:
    first = items[0]
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"invalid {first['field']}: {first['message'] or 'not accepted'}; accepted: {first['accepted']}{more}"


def install_handlers(app: FastAPI) -> None:
    """Answer APIErrors, validation errors, HTTP errors and anything unexpected with the envelope."""
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            bad = next(e for e in errors if e.get("type") == "json_invalid")
            where = (bad.get("ctx") or {}).get("error", "")
            return error_response(400, f"malformed JSON in the request body{': ' + str(where) if where else ''}")
        items = validation_errors(errors)
        return error_response(422, _summary(items), items)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"path": request.url.path, "method": request.method})
        return error_response(500, "internal error; the server log has the details")
