"""Requests into GenerationTasks, and the resource's words back into the API's.

A TaskRequest (snake_case, the old server's fields) becomes a GenerationTaskSpec (camelCase, the
resource's); what pydantic or the model catalog finds wrong is reworded into the request's
field names (`max_tokens`, not `spec.params.maxTokens`), with what the catalog would accept.
Names are translated by gentask.domain.names, the one mapping between the two spellings.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NoReturn

from pydantic import ValidationError

from gentask.api.errors import BadRequest, Unprocessable, echo, validation_errors
from gentask.api.schemas import TaskRequest
from gentask.domain import catalog
from gentask.domain.names import camel_words, to_camel, to_snake
from gentask.domain.task import API_VERSION, KIND, GenerationTaskSpec, Params, TaskType
from gentask.kube.tasks import (
    ANNOTATION_REQUEST_HASH,
    LABEL_CREATED_BY,
    LABEL_PRIORITY,
    LABEL_TYPE,
    LABEL_USER,
    user_label,
)

# the request's own names where they are not the spec's in snake_case
_REQUEST_NAMES = {"timeout_seconds": "timeout", "notify.url": "callback_url", "notify.events": "callback_events"}
# the resource's camelCase parameter names, for rewording catalog messages
_PARAM_CAMEL_NAMES = [to_camel(name) for name in Params.model_fields]


def api_field(spec_field: str) -> str:
    """A spec field ('timeoutSeconds', 'userID', 'params.maxTokens') -> the request's name for it."""
    name = ".".join(to_snake(part) for part in spec_field.removeprefix("spec.").split("."))
    for spec_name, request_name in _REQUEST_NAMES.items():
        if name == spec_name or name.startswith(spec_name + "["):
            return request_name + name[len(spec_name):]
    return name


def param_problem_field(field: str) -> str:
    """A catalog problem's field ('spec.params.maxTokens', 'spec.fallbacks[0].model') -> the API's name."""
    name = field.removeprefix("spec.")
    if name.startswith("params."):
        return to_snake(name.removeprefix("params."))
    return name


def api_words(text: str) -> str:
    """Catalog messages name parameters the resource's way; say them the API's way."""
    return camel_words(text, _PARAM_CAMEL_NAMES)


def canonical_hash(type_: TaskType, owner: str, request: TaskRequest) -> str:
    """The same request, whatever its spacing, key order or omitted defaults, hashes the same."""
    fields = request.model_dump(mode="json", exclude={"user_id"})
    for name in ("callback_url", "callback_events"):      # absent: the hash requests had before webhooks
        if fields.get(name) is None:
            fields.pop(name, None)
    doc = {"type": type_.value, "user": owner, "request": fields}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def build_spec(type_: TaskType, owner: str, req: TaskRequest, enabled: set[str]) -> dict[str, Any]:
    """The GenerationTask spec of a request; BadRequest for an unknown provider or model, Unprocessable else."""
    candidates = [("", req.provider, req.model)] + [(f"fallbacks[{i}].", f.provider, f.model)
                                                     for i, f in enumerate(req.fallbacks)]
    known = catalog.providers()
    unknown = [{"field": f"{where}provider", "value": echo(provider), "message": "unknown provider",
                "accepted": f"supported providers: {', '.join(known)}"}
               for where, provider, _ in candidates if provider not in known]
    if unknown:
        raise BadRequest(f"unknown provider {unknown[0]['value']!r}; supported providers: {', '.join(known)}",
                         errors=unknown)
    body: dict[str, Any] = {
        "type": type_.value, "provider": req.provider, "model": req.model, "prompt": req.prompt,
        "userID": owner, "priority": req.priority.value,
        "params": {to_camel(k): v for k, v in req.params().items()},
        "fallbacks": [f.model_dump() for f in req.fallbacks],
    }
    for key, value in (("timeoutSeconds", req.timeout), ("retries", req.retries),
                       ("ttlSecondsAfterFinished", req.ttl_seconds_after_finished)):
        if value is not None:
            body[key] = value
    if req.callback_url is not None:
        body["notify"] = {"url": req.callback_url}
        if req.callback_events is not None:
            body["notify"]["events"] = list(dict.fromkeys(e.value for e in req.callback_events))
    elif req.callback_events is not None:
        raise Unprocessable("callback_events needs a callback_url", errors=[
            {"field": "callback_events", "value": [e.value for e in req.callback_events],
             "message": "callback_url is missing", "accepted": "callback_events together with a callback_url"}])
    try:
        spec = GenerationTaskSpec.model_validate(body)
    except ValidationError as exc:
        _spec_problems(exc, req)
    try:
        catalog.validate_spec(spec, enabled=enabled)
    except catalog.InvalidSpecError as exc:
        catalog_problems(exc)
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")


def _spec_problems(exc: ValidationError, req: TaskRequest) -> NoReturn:
    """What pydantic found wrong with the spec, in the request's names (the catalog's words where it has them)."""
    items = validation_errors(list(exc.errors()))
    entry = catalog.lookup(req.provider, req.model)
    for item in items:
        head, _, rest = item["field"].partition(".")
        if head != "params":
            item["field"] = api_field(item["field"])
            continue
        item["field"] = param_problem_field("params." + rest)
        rule = entry.params.get(item["field"]) if entry is not None else None
        if entry is not None and rule is not None:     # the catalog says it better than a regular expression
            item["accepted"] = api_words(f"{entry.provider}/{entry.model} accepts {rule.accepted}")
    raise Unprocessable(f"invalid {items[0]['field']}: {items[0]['message']}", errors=items) from None


def catalog_problems(exc: catalog.InvalidSpecError) -> NoReturn:
    """The catalog's refusal as the API's error: 400 for the provider or model, 422 for a parameter."""
    items, model_problem = [], False
    for p in exc.problems:
        field = param_problem_field(p.field)
        if field.endswith(("provider", "model")) and not p.accepted.startswith("each "):
            model_problem = True
        items.append({"field": field, "value": echo(p.value), "accepted": api_words(p.accepted),
                      "message": "retired model" if p.reason == "ModelRetired" else "not accepted"})
    first = next((i for i in items if i["field"].endswith(("provider", "model"))), items[0])
    message = f"{first['field']} {first['value']!r} is not accepted: {first['accepted']}"
    if model_problem:
        raise BadRequest(message, errors=items)
    raise Unprocessable(message, errors=items)


def manifest(name: str, namespace: str, type_: TaskType, owner: str, spec: dict[str, Any],
             request_hash: str) -> dict[str, Any]:
    """The GenerationTask to create: the spec, the API's labels and the request's hash."""
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {LABEL_TYPE: type_.value, LABEL_PRIORITY: spec.get("priority", "default"),
                       LABEL_USER: user_label(owner), LABEL_CREATED_BY: "api"},
            "annotations": {ANNOTATION_REQUEST_HASH: request_hash},
        },
        "spec": spec,
    }
