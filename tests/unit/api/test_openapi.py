"""The OpenAPI document says what the server accepts: its create schemas against the catalog's own
decision (the translation the server runs), its providers against the settings, and the answers
every operation documents."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema_rs import Draft202012Validator  # schemathesis validates with it too

from gentask.api.app import create_app
from gentask.api.errors import APIError
from gentask.api.schemas import (
    CHECKED_BY_SERVER,
    PARAMS_OF,
    TASK_TYPE_KEY,
    ImageTaskRequest,
    TaskRequest,
    TextTaskRequest,
    VideoTaskRequest,
    int_range_pattern,
)
from gentask.api.translate import build_spec
from gentask.config import Settings
from gentask.domain import catalog
from gentask.domain.task import TaskType

ENABLED = ["volcengine", "openai", "fake"]
DOCUMENT = create_app(Settings(api_keys="k:u", providers=ENABLED)).openapi()
REQUESTS: dict[TaskType, type[TaskRequest]] = {TaskType.IMAGE: ImageTaskRequest, TaskType.VIDEO: VideoTaskRequest,
                                               TaskType.TEXT: TextTaskRequest}
# values around every rule's edges, and some no model takes
CANDIDATES: dict[str, list[Any]] = {
    "size": ["1024x1024", "864x1152", "1512x648", "512x341", "288x512", "1792x1024", "1536x1024", "16x16", "15x16",
             "16x2048", "2048x2048", "2049x16", "1280x720", "1279x720", "960x960", "3840x2160", "2160x3840",
             "3840x2176", "3856x16", "1008x1008", "1000x1000", "4096x4096", "4097x4096", "16384x1024", "8x8000",
             "0x0", "01x16", "64x64", "abc", "1024X1024", None],
    "response_format": ["url", "b64_json", "png", None],
    "n": [0, 1, 2, 4, 5, 10, 11, 15, None],
    "seed": [-2, -1, 0, 7, 2147483647, 2147483648, None],
    "aspect_ratio": ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "2:1", "0:1", "16/9", None],
    "duration": [0, 1, 2, 4, 5, 8, 10, 12, 13, 60, 61, None],
    "resolution": ["480p", "720p", "1080p", "2160p", "720", None],
    "max_tokens": [0, 1, 4096, 4097, 8192, 32768, 32769, 100000, 128000, 128001, 131072, 131073, None],
    "temperature": [-0.1, 0, 0.5, 1, 1.01, 1.5, 2, 2.1, None],
    "system_prompt": ["", "be brief", None],
}


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": DOCUMENT["components"]})


def server_accepts(type_: TaskType, body: dict[str, Any]) -> bool:
    """What the create endpoint decides, without the cluster: the request model, then the translation."""
    try:
        request = REQUESTS[type_].model_validate(body)
        build_spec(type_, "u", request, set(ENABLED))
    except (APIError, ValueError):      # pydantic's ValidationError is a ValueError
        return False
    return True


def test_int_range_pattern_matches_exactly_the_range():
    for lo, hi in [(1, 9), (16, 2048), (5, 5), (10, 99), (100, 1000), (17, 4096), (1, 131072)]:
        pattern = re.compile(f"^(?:{int_range_pattern(lo, hi)})$")
        assert [n for n in range(1, hi + 200) if pattern.match(str(n))] == list(range(lo, hi + 1)), (lo, hi)
        assert not pattern.match(f"0{lo}")


@pytest.mark.parametrize("type_", list(TaskType))
def test_a_create_is_schema_valid_exactly_when_the_server_accepts_it(type_):
    schema = DOCUMENT["components"]["schemas"][REQUESTS[type_].__name__]
    check = validator(REQUESTS[type_].__name__)
    variants = {v["title"]: v for v in schema["anyOf"]}
    for entry in catalog.MODELS:
        base = {"prompt": "a fox", "provider": entry.provider, "model": entry.model}
        if entry.type is not type_:
            assert not check.is_valid(base) and not server_accepts(type_, base)
            continue
        assert check.is_valid(base) is server_accepts(type_, base) is (not entry.retired), entry.key
        if entry.retired:
            continue
        for name in PARAMS_OF[type_]:
            stated = CHECKED_BY_SERVER not in variants[f"{entry.provider}/{entry.model}"]["properties"][name]
            for value in CANDIDATES[name]:
                body = {**base, name: value}
                valid, accepted = check.is_valid(body), server_accepts(type_, body)
                if stated:
                    assert valid is accepted, (entry.key, name, value, valid, accepted)
                else:       # the document says the server checks it: never refuses what the server takes
                    assert valid or not accepted, (entry.key, name, value)


def test_only_the_rule_no_schema_can_state_is_left_to_the_server():
    left = {(v["title"], name) for schema in DOCUMENT["components"]["schemas"].values() if TASK_TYPE_KEY in schema
            for v in schema["anyOf"] for name, prop in v["properties"].items() if CHECKED_BY_SERVER in prop}
    assert left == {("volcengine/doubao-seedream-4-0-250828", "size"),
                    ("volcengine/doubao-seedream-4-5-251128", "size")}


def test_fallbacks_are_models_of_the_type_and_a_text_holds_no_nul():
    check = validator("ImageTaskRequest")
    body = {"prompt": "a fox", "provider": "fake", "model": "fake-image"}
    assert check.is_valid({**body, "fallbacks": [{"provider": "openai", "model": "gpt-image-1.5"}]})
    for bad in ({"provider": "openai", "model": "gpt-4.1"}, {"provider": "fake", "model": "gpt-image-1.5"},
                {"provider": "openai", "model": "dall-e-3"}, {"provider": "nobody", "model": "fake-image"}):
        assert not check.is_valid({**body, "fallbacks": [bad]}) and not server_accepts(TaskType.IMAGE,
                                                                                       {**body, "fallbacks": [bad]})
    for field in ("prompt", "user_id"):
        nul = {**body, field: "a\x00b"}
        assert not check.is_valid(nul) and not server_accepts(TaskType.IMAGE, nul)
    listed = DOCUMENT["paths"]["/api/v1/ai/tasks"]["get"]["parameters"]
    assert next(p for p in listed if p["name"] == "user_id")["schema"]["anyOf"][0]["pattern"] == r"^[^\x00]*$"
    for boolean in ({"n": True}, {"seed": "7"}, {"timeout": False}):
        assert not check.is_valid({**body, **boolean}) and not server_accepts(TaskType.IMAGE, {**body, **boolean})


def test_the_document_offers_only_the_providers_the_server_enables():
    document = create_app(Settings(api_keys="k:u", providers=["fake"])).openapi()
    for type_, request in REQUESTS.items():
        schema = document["components"]["schemas"][request.__name__]
        assert schema["properties"]["provider"]["enum"] == ["fake"]
        assert [v["title"] for v in schema["anyOf"]] == [f"fake/fake-{type_.value}"]
        assert schema["properties"]["model"]["enum"] == [f"fake-{type_.value}"]
        assert schema["properties"]["fallbacks"]["items"]["properties"]["provider"]["enum"] == ["fake"]


def operations(document: dict[str, Any]):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_documents_the_answers_it_can_give():
    """Checked on every route, those added later too: what the shared parts of the API answer."""
    for path, method, operation in operations(DOCUMENT):
        codes = set(operation["responses"])
        if path.startswith("/api/"):            # the key and the rate limit: every /api operation
            assert {"401", "429"} <= codes, (method, path)
        if "requestBody" in operation:          # malformed JSON, the body limit, field errors
            assert {"400", "413", "422"} <= codes, (method, path)
        if method == "post":                    # the body limit holds for a POST without a body too
            assert "413" in codes, (method, path)
        if any(p["in"] in ("query", "header") for p in operation.get("parameters", [])):
            assert "422" in codes, (method, path)
        for code in {"429", "503"} & codes:
            assert operation["responses"][code]["headers"]["Retry-After"]["required"], (method, path, code)


def test_links_lead_from_a_create_to_the_task_and_from_a_result_to_its_artifact():
    targets = {f"#/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}" for path, method, _ in
               operations(DOCUMENT)}
    for type_ in ("image", "video", "text"):
        links = DOCUMENT["paths"][f"/api/v1/ai/{type_}/task"]["post"]["responses"]["200"]["links"]
        assert set(links) == {"GetTaskResult", "CancelTask", "DeleteTask"}
        assert {link["operationRef"] for link in links.values()} <= targets
    result = DOCUMENT["paths"]["/api/v1/ai/task/result/{task_id}"]["get"]["responses"]["200"]["links"]
    assert result["GetArtifact"]["parameters"] == {"task_id": "$response.body#/data/task_id",
                                                   "name": "$response.body#/data/result/artifacts/0/name"}
    assert result["GetArtifact"]["operationRef"] in targets


def test_the_usage_endpoint_documents_its_filters_and_answers():
    operation = DOCUMENT["paths"]["/api/v1/ai/usage"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"user_id", "from", "to", "group_by"}
    assert params["group_by"]["schema"]["enum"] == ["model", "provider", "day", "user"]
    for name in ("from", "to"):            # RFC 3339 text; from before to is the server's own check
        schema = params[name]["schema"]
        assert schema["format"] == "date-time" and schema["anyOf"][0]["pattern"].startswith("^[0-9]{4}-")
        assert "x-gentask-checked-by-server" in schema
    assert {"200", "401", "403", "422", "429", "503"} <= set(operation["responses"])
    report = DOCUMENT["components"]["schemas"]["UsageReport"]
    assert {"from", "to", "group_by", "totals", "groups", "tasks"} <= set(report["properties"])
    # and every task view says what it cost
    view = DOCUMENT["components"]["schemas"]["TaskView"]["properties"]
    assert "cost" in view and "usage" in view
