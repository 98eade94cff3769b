"""Request and response bodies of the REST API, as the OpenAPI document shows them.

The request fields are the old server's (prompt, user_id, provider, model; size, aspect_ratio,
max_tokens, temperature, seed) plus gentask's own (priority, response_format, n, duration,
resolution, system_prompt, fallbacks, timeout, retries, ttl_seconds_after_finished). Unknown
fields are ignored, as the old server ignored them. Which parameters and values a model takes
is the catalog's business (gentask.domain.catalog); the bounds here are the resource's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, computed_field, field_validator
from pydantic_core import PydanticCustomError

from gentask.domain import catalog
from gentask.domain.task import (
    PROMPT_MAX,
    RETRIES_MAX,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    TTL_MAX,
    Params,
    Priority,
    TaskType,
)
from gentask.domain.webhooks import URL_MAX, NotifyEvent

T = TypeVar("T")

OldStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]
PhaseName = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"]


# --- requests -------------------------------------------------------------------------------


# The history (MongoDB; FerretDB keeps documents in PostgreSQL's JSONB, which cannot hold U+0000)
# could not keep a task whose text holds a NUL character: such a task would never be listed.
NO_NUL: dict[str, Any] = {"pattern": r"^[^\x00]*$"}
# what the server checks of a callback_url that the schema cannot say (a 422 on callback_url)
CALLBACK_CHECKS = ("a valid URL with a host and no credentials, whose host resolves, only to public addresses "
                   "(not loopback, link-local, private, CGNAT, unique-local, multicast or reserved) unless "
                   "GENTASK_WEBHOOK_ALLOW names it; https only when ENVIRONMENT=production")


def no_nul(value: str | None) -> str | None:
    """Refuse text with a NUL character (U+0000)."""
    if value is not None and "\x00" in value:
        raise PydanticCustomError("string_nul", "text without NUL characters (U+0000)")
    return value


def json_number(value: Any, info: ValidationInfo) -> Any:
    """Refuse what pydantic's lax mode would turn into a number though JSON Schema's number is not:
    true/false and strings ("5"), as the old server's JSON decoding refused them."""
    if isinstance(value, (bool, str)):
        integer = info.field_name != "temperature"
        raise PydanticCustomError("int_type" if integer else "float_type", "Input should be a valid {what}",
                                  {"what": "integer" if integer else "number"})
    return value


class ModelChoice(BaseModel):
    """A provider and model, as in a fallback."""

    model_config = ConfigDict(extra="ignore")
    provider: str = Field(min_length=1, max_length=63, description="provider name, e.g. volcengine, openai, fake")
    model: str = Field(min_length=1, max_length=128, description="model name from GET /api/v1/ai/models")


class TaskRequest(BaseModel):
    """Fields every task type takes."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=PROMPT_MAX, description="what to generate",
                        json_schema_extra=NO_NUL)
    user_id: str | None = Field(None, min_length=1, max_length=128, json_schema_extra=NO_NUL,
                                description="owner of the task; must be the caller's user unless the caller is "
                                            "admin; defaults to the caller (required when authentication is off)")
    provider: str = Field(min_length=1, max_length=63, description="provider name (no default)")
    model: str = Field(min_length=1, max_length=128, description="model name (no default)")
    priority: Priority = Field(Priority.DEFAULT, description="critical | default | low")
    fallbacks: list[ModelChoice] = Field(default_factory=list, max_length=5,
                                         description="tried in order when the primary keeps failing")
    timeout: int | None = Field(None, ge=TIMEOUT_MIN, le=TIMEOUT_MAX,
                                description="seconds for the whole task (default 600)")
    retries: int | None = Field(None, ge=0, le=RETRIES_MAX,
                                description="attempts after the first, for retryable errors (default 3)")
    ttl_seconds_after_finished: int | None = Field(None, ge=0, le=TTL_MAX,
                                                   description="the resource is deleted this long after it "
                                                               "finishes (default 86400); the history keeps it")
    callback_url: str | None = Field(None, min_length=1, max_length=URL_MAX,
                                     description="webhook receiver (the name Volcengine Ark uses): an http(s) URL "
                                                 "told about the task's events, a CloudEvent signed per Standard "
                                                 "Webhooks; private, loopback and link-local addresses are refused",
                                     # the pattern in the document only: the server's own check says
                                     # what is wrong with a URL more clearly than a pattern mismatch
                                     json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                                                        "x-gentask-checked-by-server": CALLBACK_CHECKS})
    callback_events: list[NotifyEvent] | None = Field(None, min_length=1, max_length=6, json_schema_extra={
                                                          "x-gentask-checked-by-server": "only with a callback_url"},
                                                      description="which events to send to callback_url: queued, "
                                                                  "running, progress, succeeded, failed, cancelled "
                                                                  "(default: succeeded, failed, cancelled)")
    _numbers = field_validator("timeout", "retries", "ttl_seconds_after_finished", mode="before")(json_number)
    _texts = field_validator("prompt", "user_id")(no_nul)

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return {}


class ImageTaskRequest(TaskRequest):
    """POST /api/v1/ai/image/task: the common fields and the image parameters."""

    model_config = ConfigDict(json_schema_extra=lambda schema, _cls: catalog_request_schema(schema, TaskType.IMAGE))
    size: str | None = Field(None, max_length=16, description="WIDTHxHEIGHT, e.g. 1024x1024")
    response_format: Literal["url", "b64_json"] | None = Field(None, description="how the vendor returns the image")
    n: int | None = Field(None, ge=1, le=10, description="how many images")
    seed: int | None = Field(None, ge=-1, le=2147483647, description="-1 for random")
    _image_numbers = field_validator("n", "seed", mode="before")(json_number)

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return self.model_dump(include={"size", "response_format", "n", "seed"}, exclude_none=True)


class VideoTaskRequest(TaskRequest):
    """POST /api/v1/ai/video/task: the common fields and the video parameters."""

    model_config = ConfigDict(json_schema_extra=lambda schema, _cls: catalog_request_schema(schema, TaskType.VIDEO))
    aspect_ratio: str | None = Field(None, max_length=8, description="e.g. 16:9")
    duration: int | None = Field(None, ge=1, le=60, description="seconds")
    resolution: str | None = Field(None, max_length=8, description="e.g. 720p, 1080p")
    seed: int | None = Field(None, ge=-1, le=2147483647, description="-1 for random")
    _video_numbers = field_validator("duration", "seed", mode="before")(json_number)

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return self.model_dump(include={"aspect_ratio", "duration", "resolution", "seed"}, exclude_none=True)


class TextTaskRequest(TaskRequest):
    """POST /api/v1/ai/text/task: the common fields and the text parameters."""

    model_config = ConfigDict(json_schema_extra=lambda schema, _cls: catalog_request_schema(schema, TaskType.TEXT))
    max_tokens: int | None = Field(None, ge=1, le=131072, description="token limit of the answer")
    temperature: float | None = Field(None, ge=0, le=2, description="sampling temperature")
    system_prompt: str | None = Field(None, max_length=PROMPT_MAX, description="system message",
                                      json_schema_extra=NO_NUL)
    _text_numbers = field_validator("max_tokens", "temperature", mode="before")(json_number)
    _text_texts = field_validator("system_prompt")(no_nul)

    def params(self) -> dict[str, Any]:
        """The per-type parameters that were given, by their API names."""
        return self.model_dump(include={"max_tokens", "temperature", "system_prompt"}, exclude_none=True)


# --- responses ------------------------------------------------------------------------------


class Envelope(BaseModel, Generic[T]):
    """The old server's envelope of every answer: {success, data, message}."""

    success: bool = True
    data: T | None = None
    message: str = ""


class FieldError(BaseModel):
    """One invalid field of a request: its name, the value given and what would be accepted."""

    field: str = Field(description="the request field, e.g. size or fallbacks[0].model")
    value: Any = Field(None, description="the value given")
    accepted: str = Field(description="what would be accepted")
    message: str = ""


class ErrorEnvelope(BaseModel):
    """The envelope of every failure: success false, no data, a message, maybe field errors."""

    success: Literal[False] = False
    data: None = None
    message: str
    errors: list[FieldError] | None = Field(None, description="one entry per invalid field (400 and 422)")


class ArtifactLink(BaseModel):
    """A stored file of a task, with its download link on this API."""

    name: str = Field(description="file name of the artifact, e.g. image-0.png")
    url: str = Field(description="absolute signed download link on this API: works without any header (in an "
                                 "<img src>, in plain curl) until it expires (GENTASK_API_LINK_SECONDS); "
                                 "see docs/api.md, Signed links")
    kind: Literal["image", "video", "text"]
    mime_type: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    source_url: str | None = Field(None, description="the vendor's URL; it expires")


AMOUNT = r"^[0-9]+(\.[0-9]+)?$"
CURRENCY = r"^[A-Z]{3}$"


class UsageView(BaseModel):
    """What a task (or one attempt) consumed: the vendor's numbers where it reports them, else what was produced."""

    images: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    video_seconds: int | None = None
    video_tokens: int | None = None


class MoneyView(BaseModel):
    """An amount in one currency, as a decimal string."""

    amount: str = Field(description="decimal string, e.g. 0.259", pattern=AMOUNT, max_length=32)
    currency: str = Field(description="ISO 4217: CNY, USD (XTS: the simulator's test money)", pattern=CURRENCY)


class AttemptCostView(BaseModel):
    """One vendor attempt of a task and what it cost; a refused one costs 0."""

    provider: str
    model: str
    outcome: Literal["Succeeded", "Failed"]
    reason: str | None = None
    vendor_task_id: str | None = None
    usage: UsageView = Field(default_factory=UsageView)
    amount: str = Field(pattern=AMOUNT, max_length=32)
    currency: str = Field(pattern=CURRENCY)


class CostView(BaseModel):
    """What a task cost by the price table (docs/pricing.md): the total and each attempt."""

    amount: str | None = Field(None, description="the total, when every charge is in one currency", pattern=AMOUNT,
                               max_length=32)
    currency: str | None = Field(None, pattern=CURRENCY)
    totals: list[MoneyView] = Field(default_factory=list, description="the total per currency")
    attempts: list[AttemptCostView] = Field(default_factory=list)


class UsageGroup(BaseModel):
    """The totals of one group of a usage report."""

    key: str = Field(description="provider/model, provider, YYYY-MM-DD (UTC) or user id, by group_by")
    provider: str | None = None
    model: str | None = None
    day: str | None = None
    user: str | None = None
    tasks: int = Field(description="tasks with an attempt in this group")
    usage: UsageView
    cost: list[MoneyView] = Field(description="the cost per currency")


class UsageReport(BaseModel):
    """Usage and cost of one user's (or, for an admin without user_id, every user's) finished tasks."""

    user_id: str | None = Field(description="whose tasks; null: every user's (admin)")
    from_: datetime | None = Field(None, alias="from", description="completed at or after (RFC 3339)")
    to: datetime | None = Field(None, description="completed before (RFC 3339)")
    group_by: Literal["model", "provider", "day", "user"]
    tasks: int = Field(description="finished tasks in the window")
    totals: list[MoneyView] = Field(description="the cost per currency over all groups")
    groups: list[UsageGroup]

    model_config = ConfigDict(populate_by_name=True)


class TaskResultView(BaseModel):
    """What a task produced, as the old server gave it, plus the stored files."""

    image_url: str | None = Field(None, description="the first image: the vendor's URL, else the signed artifact link")
    image_urls: list[str] = Field(default_factory=list)
    video_url: str | None = None
    text_result: str | None = None
    artifacts: list[ArtifactLink] = Field(default_factory=list)
    usage: dict[str, int] = Field(default_factory=dict)


class ModelRefView(BaseModel):
    """A provider and model in a view (served_by, fallbacks)."""

    provider: str
    model: str


class TaskView(BaseModel):
    """A task as clients see it: what was asked, the phase and its old status word, the result.

    The old server's fields (task_id, type, status, created, updated, image_url, video_url,
    text_result, and id in list entries) sit at the top level, where its clients read them,
    beside gentask's richer ones."""

    task_id: str = Field(description="the GenerationTask's name")
    id: str = Field(description="the same as task_id: the old server's list entries named it id")
    user_id: str
    type: str
    provider: str
    model: str
    prompt: str
    priority: str
    status: OldStatus = Field(description="the old server's word for the phase")
    phase: PhaseName = Field(description="Pending | Queued | Running | Succeeded | Failed | Cancelled")
    reason: str | None = None
    message: str | None = None
    error: str | None = Field(None, description="why it failed, when it failed")
    attempts: int = 0
    served_by: ModelRefView | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    fallbacks: list[ModelRefView] = Field(default_factory=list)
    cancel_requested: bool = False
    result: TaskResultView | None = None
    usage: UsageView | None = Field(None, description="what the task consumed over all its attempts")
    cost: CostView | None = Field(None, description="what the task cost by the price table; a refused attempt "
                                                     "costs 0 (docs/pricing.md)")
    created_at: datetime | None = Field(None, description="RFC 3339, UTC")
    started_at: datetime | None = Field(None, description="RFC 3339, UTC")
    completed_at: datetime | None = Field(None, description="RFC 3339, UTC")
    # the old server's fields, where its clients read them
    created: datetime | None = Field(None, description="the old server's name of created_at (RFC 3339, UTC)")
    updated: datetime | None = Field(None, description="the last change, as the old server had it: completed_at "
                                                       "once finished, else started_at, else created_at")
    image_url: str | None = Field(None, description="result.image_url, where the old server put it")
    video_url: str | None = Field(None, description="result.video_url, where the old server put it")
    text_result: str | None = Field(None, description="result.text_result, where the old server put it")

    _uid: str = PrivateAttr("")       # the task's uid: what its artifact links are signed for

    @property
    def uid(self) -> str:
        """The uid of the task this view shows (not part of the answer)."""
        return self._uid


class TaskPage(BaseModel):
    """One page of a user's tasks, newest first, and how many there are in all."""

    tasks: list[TaskView]
    total: int
    limit: int
    offset: int

    @computed_field(description="tasks on this page, as the old server's lists had it")  # type: ignore[prop-decorator]
    @property
    def count(self) -> int:
        """How many tasks this page holds."""
        return len(self.tasks)


class DeletedTask(BaseModel):
    """The answer to a delete."""

    task_id: str
    deleted: bool = True


class ModelView(BaseModel):
    """One catalog entry: a provider's model, its task type and parameters."""

    provider: str
    model: str
    type: str
    parameters: dict[str, str] = Field(description="parameter -> accepted values")
    defaults: dict[str, Any]
    enabled: bool = Field(description="the provider is enabled on this server (GENTASK_PROVIDERS)")
    retired: str | None = None
    successor: str | None = None
    note: str = ""
    price: str | None = Field(None, description="the price table's figures, e.g. '0.2 CNY/image' (docs/pricing.md)")


class ModelList(BaseModel):
    """The model catalog, filtered as asked."""

    models: list[ModelView]


class Readiness(BaseModel):
    """What /readyz found: the cluster watch, MongoDB, the tasks watched."""

    cluster: str
    mongodb: str
    tasks_watched: int


# --- what the model catalog lets the document say -------------------------------------------
#
# A create request's schema says what the server accepts: the providers and, per provider, the
# models of the endpoint's type that are not retired (an `anyOf` variant per model, which fixes
# provider and model with `const` and narrows each parameter to the values that model takes: an
# enum, bounds, a pattern, or null for a parameter the model does not take). A rule no JSON
# Schema can state (an image area with a ratio bound) stays a description and is listed under
# CHECKED_BY_SERVER on the variant's property; a request that breaks it is a 422 naming the field.
# `restrict_providers` narrows a document to the providers a server enables (GENTASK_PROVIDERS).

TASK_TYPE_KEY = "x-gentask-task-type"
CHECKED_BY_SERVER = "x-gentask-checked-by-server"
# the checks of a whole request that no schema of its fields can state
REQUEST_CHECKS = [
    "the parameters must suit every fallback's model too: a value one of them does not take is a 422 "
    "whose error's accepted names that fallback (fallbacks[i] provider/model accepts ...)",
    "a (provider, model) at most once, the primary's included: a repeat is a 422 on fallbacks[i].model",
]
PARAMS_OF = {TaskType.IMAGE: ("size", "response_format", "n", "seed"),
             TaskType.VIDEO: ("aspect_ratio", "duration", "resolution", "seed"),
             TaskType.TEXT: ("max_tokens", "temperature", "system_prompt")}

_BETWEEN = re.compile(r"^(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)$")
_SIDES = re.compile(r"^WxH with each side (\d+)\.\.(\d+)$")
_MULTIPLES = re.compile(r"^WxH, both multiples of (\d+), at most (\d+)x(\d+) either way$")


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _spec_pattern(name: str) -> str | None:
    """The resource's pattern of a parameter (Params), which the API checks through the spec."""
    return next((m.pattern for m in Params.model_fields[name].metadata if getattr(m, "pattern", None)), None)


def int_range_pattern(lo: int, hi: int) -> str:
    """A regular expression (no anchors) of the decimal integers lo..hi (1 <= lo), without leading zeros.

    lo..hi is cut into blocks `<head><digit>[0-9]{k}`, each as large as lo's trailing zeros and hi
    allow; neighbouring blocks that differ only in their digit become one `<head>[a-b][0-9]{k}`."""
    runs: list[list[Any]] = []                   # [head, first digit, last digit, k]
    while lo <= hi:
        k = 0
        while lo % 10 ** (k + 1) == 0 and lo + 10 ** (k + 1) - 1 <= hi:
            k += 1
        text = str(lo)
        head, digit = text[:len(text) - k - 1], int(text[len(text) - k - 1])
        last = runs[-1] if runs else None
        if last is not None and last[0] == head and last[3] == k and last[2] + 1 == digit:
            last[2] = digit
        else:
            runs.append([head, digit, digit, k])
        lo += 10 ** k
    parts = []
    for head, first, final, k in runs:
        digits = str(first) if first == final else f"[{first}-{final}]"
        parts.append(head + digits + ("" if k == 0 else "[0-9]" if k == 1 else f"[0-9]{{{k}}}"))
    return "|".join(parts)


def rule_schema(rule: catalog.Rule) -> dict[str, Any] | None:
    """The JSON Schema of the values a catalog rule accepts (null included: null is "not given");
    None when no schema can say it (the server checks it)."""
    if rule.choices:
        return {"enum": [*rule.choices, None]}
    if rule.accepted == "any text":
        return {}
    if (m := _BETWEEN.match(rule.accepted)) is not None:
        return {"minimum": _number(m[1]), "maximum": _number(m[2])}
    if (m := _SIDES.match(rule.accepted)) is not None:
        side = int_range_pattern(int(m[1]), int(m[2]))
        return {"pattern": f"^(?:{side})x(?:{side})$"}
    if (m := _MULTIPLES.match(rule.accepted)) is not None:
        step, long_side, short_side = int(m[1]), int(m[2]), int(m[3])
        longer = "|".join(str(v) for v in range(step, long_side + 1, step))
        shorter = "|".join(str(v) for v in range(step, short_side + 1, step))
        return {"pattern": f"^(?:(?:{shorter})x(?:{longer})|(?:{longer})x(?:{shorter}))$"}
    return None


def model_variant(entry: catalog.ModelSpec) -> dict[str, Any]:
    """One model's part of a create request's anyOf: its provider and model, and what each parameter takes."""
    properties: dict[str, Any] = {"provider": {"const": entry.provider}, "model": {"const": entry.model}}
    for name in PARAMS_OF[entry.type]:
        rule = entry.params.get(name)
        if rule is None:
            properties[name] = {"type": "null", "description": f"{entry.provider}/{entry.model} does not take it"}
            continue
        schema = rule_schema(rule)
        if schema is None:
            schema = {"description": f"{rule.accepted} (checked by the server: 422 otherwise)",
                      CHECKED_BY_SERVER: rule.accepted}
        properties[name] = schema
    title = f"{entry.provider}/{entry.model}"
    return {"title": title, "description": entry.note or title, "properties": properties}


def _fallback_items(entries: list[catalog.ModelSpec]) -> dict[str, Any]:
    providers = sorted({m.provider for m in entries})
    return {"type": "object", "title": "Fallback", "required": ["provider", "model"],
            "description": "a provider and one of its models of this type that is not retired",
            "properties": {"provider": {"type": "string", "enum": providers},
                           "model": {"type": "string", "enum": [m.model for m in entries]}},
            "anyOf": [{"title": provider, "properties": {
                "provider": {"const": provider},
                "model": {"enum": [m.model for m in entries if m.provider == provider]}}} for provider in providers]}


def catalog_request_schema(schema: dict[str, Any], type_: TaskType) -> None:
    """Narrow a create request's generated schema to what the catalog accepts for `type_` (in place)."""
    entries = [m for m in catalog.MODELS if m.type is type_ and not m.retired]
    props = schema["properties"]
    props["provider"]["enum"] = sorted({m.provider for m in entries})
    props["provider"]["description"] = "provider name (no default); which models it serves: the anyOf variants"
    props["model"]["enum"] = [m.model for m in entries]
    article = "an" if type_ is TaskType.IMAGE else "a"
    props["model"]["description"] = (f"{article} {type_.value} model of the provider (no default) that is not "
                                     "retired; GET /api/v1/ai/models lists them, with the parameters each takes")
    props["fallbacks"]["items"] = _fallback_items(entries)
    for name in PARAMS_OF[type_]:
        pattern = _spec_pattern(name)
        if pattern is not None:
            props[name]["anyOf"][0]["pattern"] = pattern
    schema[TASK_TYPE_KEY] = type_.value
    schema["anyOf"] = [model_variant(m) for m in entries]
    schema[CHECKED_BY_SERVER] = REQUEST_CHECKS


def restrict_providers(document: dict[str, Any], enabled: Iterable[str]) -> dict[str, Any]:
    """The OpenAPI document narrowed to the providers this server enables: variants, enums and
    fallbacks of the others go (a create naming one is a 400). Changes `document` in place."""
    keep = set(enabled)
    for schema in document.get("components", {}).get("schemas", {}).values():
        if TASK_TYPE_KEY not in schema:
            continue
        variants = [v for v in schema["anyOf"] if v["properties"]["provider"]["const"] in keep]
        # no enabled provider serves this type: no request is valid (anyOf must not be empty)
        schema["anyOf"] = variants or [{"not": {}}]
        models = [v["properties"]["model"]["const"] for v in variants]
        props = schema["properties"]
        props["provider"]["enum"] = [p for p in props["provider"]["enum"] if p in keep]
        props["model"]["enum"] = models
        items = props["fallbacks"]["items"]
        items["properties"]["provider"]["enum"] = [p for p in items["properties"]["provider"]["enum"] if p in keep]
        items["properties"]["model"]["enum"] = [m for m in items["properties"]["model"]["enum"] if m in models]
        items["anyOf"] = [v for v in items["anyOf"] if v["properties"]["provider"]["const"] in keep] or [{"not": {}}]
    return document


