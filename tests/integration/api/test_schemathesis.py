"""Schemathesis over the OpenAPI document the API serves: no 500, every answer as the document
says, and every schema-valid request accepted.

The document is the app's own, built with the settings the launched API runs with (so narrowed
to the providers it enables; the test checks that the API serves this very document), and every
route of the app is fuzzed, routes added later too. Every built-in check runs, with
positive_data_acceptance in a form that knows the few rules the document declares it cannot state
(`x-gentask-checked-by-server`): a 422 whose every error is one of those is the documented answer,
any other refusal of a schema-valid request fails. Operations whose
success is a `text/event-stream` are left out: a stream that never ends is no request-response
case (their own tests follow them).

Two phases: each operation on its own (explicit examples, the schema's coverage cases and
MAX_EXAMPLES generated ones), then the stateful phase, which follows the document's links from a
create to the task's result, cancel and delete, and from a result to its first artifact. There
the test plays the worker for images and texts: it completes each such task as soon as it is
created, with a stored file, so that results have artifacts to download and a cancel meets a
finished task (409); videos stay pending. Rate limits and the unfinished-task cap are off for the
run (the launched API's settings).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import positive_data_acceptance
from schemathesis.openapi.checks import RejectedPositiveData

from gentask.api.app import create_app
from gentask.api.deps import IDEMPOTENCY_KEY_PATTERN
from gentask.api.schemas import CHECKED_BY_SERVER, TASK_TYPE_KEY
from gentask.config import Settings
from tests.integration.api.conftest import KEYS, Worker, launch
from tests.support.waits import wait_for

MAX_EXAMPLES = int(os.environ.get("GENTASK_FUZZ_EXAMPLES", "100"))
STATEFUL_EXAMPLES = int(os.environ.get("GENTASK_FUZZ_STATEFUL_EXAMPLES", "100"))
# an admin: a user_id in a request is then anyone's, so generated ones are accepted rather than a
# 403 (ownership has its own tests, test_auth)
HEADERS = {"Authorization": f"Bearer {KEYS['root']}"}
EVENT_STREAM = "text/event-stream"
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def streams(operation: dict[str, Any]) -> bool:
    """The operation answers success with an event stream (an endless one, for /events)."""
    return any(EVENT_STREAM in (answer.get("content") or {})
               for code, answer in (operation.get("responses") or {}).items() if str(code).startswith("2"))


def finish(worker: Worker, api, task: dict[str, Any]) -> None:
    """Complete a new image or text task as its worker would (status, stored file), and wait until the
    API shows it: the stateful phase then downloads artifacts and meets finished tasks."""
    if task.get("type") not in ("image", "text"):
        return                                       # videos stay pending: cancel and delete take them
    name = task["task_id"]
    if task["type"] == "image":
        worker.succeed_image(name)
    else:
        worker.succeed_text(name, "an answer")
    with httpx.Client(base_url=api.url, headers=HEADERS, timeout=30) as c:
        deadline = time.monotonic() + 10
        while c.get(f"/api/v1/ai/task/result/{name}").json()["data"]["status"] != "completed":
            assert time.monotonic() < deadline, f"the API never showed {name} completed"
            time.sleep(0.02)


# the launched API's settings that shape the document; building the app touches no cluster (its
# lifespan does). (schemathesis.pytest.from_fixture, which would read the served document, does not
# run under pytest 9.)
SETTINGS = {"providers": ["volcengine", "openai", "fake"], "api_max_unfinished_per_user": 0, "api_rate_per_user": 0}
DOCUMENT = create_app(Settings(api_keys="k:u", **SETTINGS)).openapi()


@pytest.fixture(scope="module")
def fuzzed(cluster, module_namespace):
    # event streams end after half a second here, so that a call of GET /api/v1/ai/events returns
    api = launch(cluster, module_namespace, **{**SETTINGS, "api_sse_max_seconds": 0.5})
    yield api
    answered = httpx.get(f"{api.url}/metrics", timeout=30).text.splitlines()
    print("\n".join(line for line in answered if line.startswith("gentask_api_requests_total{")))
    api.stop()


@pytest.fixture(scope="module")
def document(fuzzed) -> dict[str, Any]:
    served = httpx.get(f"{fuzzed.url}/openapi.json", timeout=30).raise_for_status().json()
    assert served == DOCUMENT, "the launched API serves another document than the one fuzzed"
    return DOCUMENT


api_schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(func=lambda ctx: streams(ctx.operation.definition.raw))


def _request_schema(document: dict[str, Any], case) -> dict[str, Any] | None:
    body = (case.operation.definition.raw.get("requestBody") or {}).get("content", {}).get("application/json", {})
    ref = (body.get("schema") or {}).get("$ref", "")
    schema = document["components"]["schemas"].get(ref.rsplit("/", 1)[-1]) if ref else None
    return schema if schema is not None and TASK_TYPE_KEY in schema else None


def _server_checked(document: dict[str, Any], case, answer: dict[str, Any]) -> bool:
    """Every error of a 422 to a create is a rule the document says it cannot state (or, for a
    query, every error names a parameter whose schema says so: the usage endpoint's window)."""
    schema = _request_schema(document, case)
    errors = answer.get("errors") or []
    if schema is None and errors:
        params = {p["name"]: p.get("schema") or {} for p in case.operation.definition.raw.get("parameters", [])}
        return all(CHECKED_BY_SERVER in params.get(str(e.get("field")), {}) for e in errors)
    if schema is None or not errors or not isinstance(case.body, dict):
        return False
    title = f"{case.body.get('provider')}/{case.body.get('model')}"
    variant = next((v for v in schema["anyOf"] if v.get("title") == title), {"properties": {}})

    def declared(error: dict[str, Any]) -> bool:
        field, accepted = str(error.get("field")), str(error.get("accepted"))
        if accepted.startswith("fallbacks["):                       # a parameter one fallback's model refuses
            return True
        if field.startswith("fallbacks[") and field.endswith(".model") and "at most once" in accepted:
            return True                                             # a (provider, model) repeated
        return CHECKED_BY_SERVER in (variant["properties"].get(field) or schema["properties"].get(field) or {})
    return all(declared(e) for e in errors)


@pytest.fixture(scope="module")
def accepted(document):
    """positive_data_acceptance, knowing the 422s that the document itself declares."""
    def schema_valid_requests_are_accepted(ctx, response, case):
        try:
            return positive_data_acceptance(ctx, response, case)
        except RejectedPositiveData:
            if response.status_code == 422 and _server_checked(document, case, response.json()):
                return None
            raise
    return schema_valid_requests_are_accepted


@api_schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_no_server_error_and_answers_as_documented(case, fuzzed, accepted):
    """One operation: explicit examples, coverage cases and MAX_EXAMPLES generated requests."""
    case.call_and_validate(base_url=fuzzed.url, headers=HEADERS, excluded_checks=[positive_data_acceptance],
                           additional_checks=[accepted], timeout=30)


@pytest.mark.timeout(1200)
def test_stateful_links_from_a_create_to_its_result_cancel_artifact_and_delete(cluster, module_namespace, fuzzed,
                                                                              accepted, document):
    links = {name for path in document["paths"].values() for op in path.values()
             for answer in op.get("responses", {}).values() for name in answer.get("links", {})}
    assert {"GetTaskResult", "CancelTask", "DeleteTask", "GetArtifact"} <= links
    # user_id names a task's owner, which no operation makes: schemathesis takes it for a reference
    # to a "User" resource that nothing produces, and would start no scenario from a create
    for node in api_schema.analysis.dependency_graph.operations.values():
        node.inputs = [slot for slot in node.inputs if slot.resource.name != "User"]
    base = api_schema.as_state_machine()
    worker = Worker(cluster, module_namespace)
    assert {"RANDOM__POST_api_v1_ai_image_task", "RANDOM__POST_api_v1_ai_text_task"} <= set(base.root_rules)

    class Linked(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            super().__init__()
            self.run_id = uuid.uuid4().hex

        def before_call(self, case):
            # An Idempotency-Key is remembered by the cluster across scenarios: the same key would
            # find the task of an earlier scenario (or a 409), the scenario would unfold otherwise
            # than when Hypothesis drew it, and Hypothesis reports that as a flaky strategy. Keys
            # are made the scenario's own (a valid key stays valid, an invalid one stays as it is).
            key = (case.headers or {}).get("Idempotency-Key")
            if isinstance(key, str) and IDEMPOTENCY_KEY.match(key):
                case.headers["Idempotency-Key"] = hashlib.sha256(f"{self.run_id}/{key}".encode()).hexdigest()
            super().before_call(case)

        def after_call(self, response, case):
            super().after_call(response, case)
            if case.method.upper() == "POST" and case.path.endswith("/task") and response.status_code == 200:
                finish(worker, fuzzed, response.json()["data"])

        def get_call_kwargs(self, case):
            return {"base_url": fuzzed.url, "headers": HEADERS, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, additional_checks=[accepted, *(additional_checks or [])],
                                   excluded_checks=[positive_data_acceptance], transport_kwargs=kwargs or None,
                                   recorder=self.recorder)

    started = time.monotonic()
    for attempt in range(3):
        # Whether a step follows a link's value or draws its own is decided by a random number that
        # Hypothesis does not record (schemathesis' choice), so a scenario replayed can meet other
        # answers and Hypothesis may find its own generation inconsistent. Schemathesis' runner
        # starts such a run again; so does this test. A failed check is never retried.
        try:
            Linked.run(settings=settings(max_examples=STATEFUL_EXAMPLES, deadline=None, derandomize=attempt == 0,
                                         database=None, stateful_step_count=8,
                                         suppress_health_check=list(HealthCheck)))
            break
        except FlakyStrategyDefinition as exc:
            print(f"stateful phase, attempt {attempt + 1}: Hypothesis found its generation inconsistent ({exc!s:.80})")
    else:
        pytest.fail("the stateful phase never ran through: Hypothesis found its generation inconsistent 3 times")
    print(f"stateful phase: {time.monotonic() - started:.1f} s")


def test_the_documented_list_bounds_hold_for_a_status_of_several_phases(fuzzed):
    """offset 0..1,000,000 whatever the filters: `pending` (Pending and Queued) pages past 1,000 too."""
    c, user = fuzzed.client("root"), f"pager-{uuid.uuid4().hex[:8]}"
    ids = [c.post("/api/v1/ai/text/task", json={"prompt": f"p{i}", "provider": "fake", "model": "fake-text",
                                                 "user_id": user}).raise_for_status().json()["data"]["task_id"]
           for i in range(3)]

    def page(**params):
        return c.get("/api/v1/ai/tasks", params={"user_id": user, "status": "pending", **params})
    wait_for(lambda: page().json()["data"]["total"], 30, until=lambda n: n == 3, what="the 3 tasks in the history")
    pages = [[t["task_id"] for t in page(limit=2, offset=offset).json()["data"]["tasks"]] for offset in (0, 2)]
    assert [len(p) for p in pages] == [2, 1] and set(pages[0] + pages[1]) == set(ids)
    for offset in (3, 1001, 1_000_000):
        answer = page(offset=offset, type="text")
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["tasks"] == [] and answer.json()["data"]["total"] == 3
    for beyond in ({"offset": 1_000_001}, {"offset": -1}, {"limit": 101}, {"limit": 0}):
        assert page(**beyond).status_code == 422, beyond
