"""Idempotency-Key: the same key and body return the same task; another body is 409."""

from __future__ import annotations

import json

from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.integration.api.conftest import IMAGE, create


def _tasks(worker) -> list[str]:
    items = worker.api.list_namespaced_custom_object(GROUP, VERSION, worker.namespace, PLURAL)["items"]
    return [i["metadata"]["name"] for i in items]


def test_same_key_same_body_returns_the_same_task(alice, worker):
    first = alice.post("/api/v1/ai/image/task", json=IMAGE, headers={"Idempotency-Key": "order-42"})
    # the same body, other spacing and key order, explicit default: still the same request
    again = alice.post("/api/v1/ai/image/task", content=json.dumps(dict(reversed(list({**IMAGE, "priority": "default"}
                                                                                     .items()))), indent=2),
                       headers={"Idempotency-Key": "order-42", "Content-Type": "application/json"})
    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert first.json()["data"]["task_id"] == again.json()["data"]["task_id"]
    assert _tasks(worker) == [first.json()["data"]["task_id"]]


def test_same_key_other_body_is_409(alice, worker):
    alice.post("/api/v1/ai/image/task", json=IMAGE, headers={"Idempotency-Key": "k-1"})
    r = alice.post("/api/v1/ai/image/task", json={**IMAGE, "prompt": "a blue fox"}, headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 409 and r.json()["success"] is False
    assert len(_tasks(worker)) == 1


def test_keys_are_per_user(alice, bob):
    a = create(alice, "image", None, **{"Idempotency-Key": "shared"})
    b = create(bob, "image", None, **{"Idempotency-Key": "shared"})
    assert a["task_id"] != b["task_id"] and b["user_id"] == "bob"


def test_replay_survives_an_api_restart(start_api, worker):
    """The key lives in the task's name and annotation, not in the API's memory."""
    first = start_api().client("alice")
    task_id = create(first, "image", None, **{"Idempotency-Key": "restart-1"})["task_id"]
    second = start_api().client("alice")          # a fresh replica
    again = second.post("/api/v1/ai/image/task", json=IMAGE, headers={"Idempotency-Key": "restart-1"})
    assert again.status_code == 200 and again.json()["data"]["task_id"] == task_id
    other = second.post("/api/v1/ai/image/task", json={**IMAGE, "seed": 3}, headers={"Idempotency-Key": "restart-1"})
    assert other.status_code == 409
    assert _tasks(worker) == [task_id]


def test_a_bad_key_is_422(alice):
    r = alice.post("/api/v1/ai/image/task", json=IMAGE, headers={"Idempotency-Key": "has space"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"
