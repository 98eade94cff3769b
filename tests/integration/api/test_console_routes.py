"""The two routes the web console added: who the key is (/me) and a task's timeline (conditions,
Events, or the times the history kept), with the result endpoint's ownership rules."""

from __future__ import annotations

from kubernetes import client

from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.integration.api.conftest import create, now
from tests.support.waits import wait_for


def test_me_says_who_the_key_is(api):
    assert api.client("alice").get("/api/v1/ai/me").json()["data"] == {"user_id": "alice", "admin": False}
    assert api.client("root").get("/api/v1/ai/me").json()["data"] == {"user_id": "root", "admin": True}
    for c in (api.client(None), api.client("no-such-key")):
        r = c.get("/api/v1/ai/me")
        assert r.status_code == 401 and r.json()["success"] is False


def _event(cluster, namespace: str, task: dict, reason: str, message: str, at: str, uid: str | None = None) -> None:
    client.CoreV1Api(cluster.api).create_namespaced_event(namespace, {
        "metadata": {"generateName": f"{task['task_id']}."},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "name": task["task_id"],
                           "namespace": namespace, "uid": uid or task["uid"]},
        "reason": reason, "message": message, "type": "Normal", "source": {"component": "gentask-operator"},
        "firstTimestamp": at, "lastTimestamp": at, "count": 1})


def test_the_timeline_shows_conditions_and_events_of_the_live_task(api, alice, bob, root, worker, cluster):
    task = create(alice)
    task["uid"] = worker.get(task["task_id"])["metadata"]["uid"]
    worker.patch_status(task["task_id"], {"phase": "Running", "reason": "Started", "attempts": 1, "conditions": [
        {"type": "Running", "status": "True", "reason": "Started", "message": "attempt 1 on node-a",
         "lastTransitionTime": now()}]})
    _event(cluster, api.namespace, task, "Queued", "job created", "2026-12-01T10:00:00Z")
    _event(cluster, api.namespace, task, "Started", "attempt 1 <b>started</b>", "2026-12-01T10:00:05Z")
    _event(cluster, api.namespace, task, "Completed", "an earlier task of that name", "2026-12-01T09:00:00Z",
           uid="00000000-0000-0000-0000-000000000000")
    data = wait_for(lambda: alice.get(f"/api/v1/ai/task/{task['task_id']}/timeline").json()["data"], 30,
                    until=lambda d: d["conditions"] and len(d["events"]) == 2, what="the timeline")
    assert data["live"] is True and data["status"] == "processing" and data["events_note"] is None
    assert data["conditions"][0]["type"] == "Running" and data["conditions"][0]["message"] == "attempt 1 on node-a"
    assert [e["reason"] for e in data["events"]] == ["Queued", "Started"]          # oldest first, this uid only
    assert data["events"][1]["message"] == "attempt 1 <b>started</b>" and data["events"][1]["source"] == \
        "gentask-operator"
    assert root.get(f"/api/v1/ai/task/{task['task_id']}/timeline").status_code == 200
    refused = bob.get(f"/api/v1/ai/task/{task['task_id']}/timeline")
    assert refused.status_code == 404 and refused.json()["success"] is False
    assert alice.get("/api/v1/ai/task/no-such-task/timeline").status_code == 404


def test_the_timeline_of_a_task_only_the_history_has(api, alice, worker):
    task = create(alice)
    worker.run(task["task_id"])
    worker.succeed_text(task["task_id"], "done")
    worker.mirror(task["task_id"])
    client.CustomObjectsApi(worker.cluster.api).delete_namespaced_custom_object(
        GROUP, VERSION, api.namespace, PLURAL, task["task_id"])           # as its TTL would: the history keeps it
    data = wait_for(lambda: alice.get(f"/api/v1/ai/task/{task['task_id']}/timeline").json().get("data"), 30,
                    until=lambda d: d and d["live"] is False, what="the timeline from the history")
    assert data["status"] == "completed" and data["conditions"] == [] and data["events"] == []
    assert data["created_at"] and data["started_at"] and data["completed_at"]
