"""The endpoints as a client uses them: create, read, cancel, delete, download, models, probes."""

from __future__ import annotations

from kubernetes import client

from gentask.domain.task import GROUP, PLURAL, VERSION
from gentask.storage import connect
from tests.integration.api.conftest import IMAGE, TEXT, VIDEO, create, sha256
from tests.support.waits import wait_for


def test_image_task_becomes_a_generation_task_with_labels(api, alice, cluster):
    data = create(alice, "image", {**IMAGE, "priority": "critical", "seed": 7, "response_format": "b64_json"})
    assert data["task_id"].startswith("img-") and len(data["task_id"]) <= 63
    assert (data["status"], data["phase"], data["user_id"]) == ("pending", "Pending", "alice")
    assert data["params"] == {"size": "64x64", "seed": 7, "response_format": "b64_json"}
    obj = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, api.namespace, PLURAL, data["task_id"])
    assert obj["spec"]["userID"] == "alice" and obj["spec"]["priority"] == "critical"
    assert obj["spec"]["params"] == {"size": "64x64", "seed": 7, "responseFormat": "b64_json"}
    labels = obj["metadata"]["labels"]
    assert labels["gentask.io/type"] == "image" and labels["gentask.io/priority"] == "critical"
    assert labels["gentask.io/user"].startswith("u") and "alice" not in labels["gentask.io/user"]


def test_video_and_text_tasks_and_our_fields(alice):
    video = create(alice, "video", {**VIDEO, "aspect_ratio": "9:16", "timeout": 120, "retries": 1})
    assert video["task_id"].startswith("vid-") and video["type"] == "video"
    assert video["params"] == {"aspect_ratio": "9:16", "duration": 1}
    text = create(alice, "text", {**TEXT, "temperature": 0.2,
                                  "fallbacks": [{"provider": "openai", "model": "gpt-4.1"}]})
    assert text["task_id"].startswith("txt-")
    assert text["fallbacks"] == [{"provider": "openai", "model": "gpt-4.1"}]


def test_the_old_clients_request_works_unchanged(alice):
    """The old server's fields, an unknown extra field, user_id in the body."""
    body = {"prompt": "a kitten playing in a garden", "user_id": "alice", "provider": "volcengine",
            "model": "doubao-seedream-3-0-t2i-250415", "size": "1024x1024", "seed": -1, "legacy_flag": True}
    r = alice.post("/api/v1/ai/image/task", json=body)
    assert r.status_code == 200
    doc = r.json()
    assert doc["success"] is True and doc["message"] and doc["data"]["status"] == "pending"


def test_result_follows_the_phase_with_old_status_words(alice, worker):
    task_id = create(alice)["task_id"]
    assert alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]["status"] == "pending"
    worker.patch_status(task_id, {"phase": "Queued", "reason": "JobCreated"})
    worker.wait_result(alice, task_id, lambda d: d.get("phase") == "Queued", "Queued", 10)
    assert alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]["status"] == "pending"
    worker.run(task_id)
    worker.wait_result(alice, task_id, lambda d: d.get("status") == "processing", "processing", 10)
    worker.fail(task_id)
    data = worker.wait_result(alice, task_id, lambda d: d.get("status") == "failed", "failed", 10)
    assert data["reason"] == "ContentRejected" and data["error"] == "the vendor refused the prompt"


def test_succeeded_image_has_urls_and_a_downloadable_artifact(alice, worker):
    task_id = create(alice)["task_id"]
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    worker.succeed_image(task_id, png)
    data = worker.wait_result(alice, task_id, lambda d: d.get("status") == "completed", "completed", 10)
    result = data["result"]
    assert result["image_url"] == "https://vendor.example/fox.png" and result["image_urls"] == [result["image_url"]]
    (artifact,) = result["artifacts"]
    path = f"/api/v1/ai/task/{task_id}/artifacts/image-0.png"
    assert artifact["url"].startswith(f"{alice.base_url}{path}?")      # absolute and signed: test_links
    assert artifact["sha256"] == sha256(png) and artifact["mime_type"] == "image/png"
    assert data["served_by"] == {"provider": "fake", "model": "fake-image"}
    r = alice.get(path)                                                # the header path
    assert r.status_code == 200 and r.content == png
    assert r.headers["content-type"] == "image/png" and r.headers["etag"] == f'"{sha256(png)}"'
    assert alice.get(f"/api/v1/ai/task/{task_id}/artifacts/video.mp4").status_code == 404


def test_text_result_in_text_result(alice, worker):
    task_id = create(alice, "text")["task_id"]
    worker.succeed_text(task_id, "old pond / a frog jumps in")
    data = worker.wait_result(alice, task_id, lambda d: d.get("status") == "completed", "completed", 10)
    assert data["result"]["text_result"] == "old pond / a frog jumps in"
    assert data["result"]["usage"] == {"tokens": 3}


def test_cancel_sets_spec_cancel_and_refuses_finished_tasks(alice, worker):
    task_id = create(alice)["task_id"]
    r = alice.post(f"/api/v1/ai/task/{task_id}/cancel")
    assert r.status_code == 200 and r.json()["data"]["cancel_requested"] is True
    assert worker.get(task_id)["spec"]["cancel"] is True
    assert alice.post(f"/api/v1/ai/task/{task_id}/cancel").status_code == 200      # asking twice is fine
    worker.patch_status(task_id, {"phase": "Cancelled", "reason": "Cancelled",
                                  "completionTime": "2026-01-01T00:00:00Z"})
    worker.wait_result(alice, task_id, lambda d: d.get("status") == "cancelled", "cancelled", 10)
    r = alice.post(f"/api/v1/ai/task/{task_id}/cancel")
    assert r.status_code == 409 and "cancelled" in r.json()["message"]


def test_delete_removes_the_resource(alice, worker):
    task_id = create(alice)["task_id"]
    r = alice.delete(f"/api/v1/ai/task/{task_id}")
    assert r.status_code == 200 and r.json()["data"] == {"task_id": task_id, "deleted": True}
    assert not _exists(worker, task_id)


def test_a_deleted_task_leaves_the_history(alice, worker):
    task_id = create(alice)["task_id"]
    wait_for(lambda: _listed(alice), 10, until=lambda ids: task_id in ids, what=f"task {task_id} mirrored",
             describe=lambda: worker.describe(task_id))
    assert alice.delete(f"/api/v1/ai/task/{task_id}").status_code == 200
    assert alice.get(f"/api/v1/ai/task/result/{task_id}").status_code == 404
    assert alice.delete(f"/api/v1/ai/task/{task_id}").status_code == 404
    assert task_id not in _listed(alice)


def test_a_deleted_task_loses_its_stored_files(alice, worker):
    task_id = create(alice)["task_id"]
    worker.succeed_image(task_id)
    uid = worker.get(task_id)["metadata"]["uid"]
    link = worker.wait_result(alice, task_id, lambda d: d.get("status") == "completed", "completed",
                              10)["result"]["artifacts"][0]["url"]
    assert alice.get(link).status_code == 200
    assert alice.delete(f"/api/v1/ai/task/{task_id}").status_code == 200
    assert alice.get(link).status_code == 404
    db = connect(worker.settings)
    assert db["artifacts.files"].count_documents({"metadata.taskUID": uid}) == 0
    assert db["artifacts.catalog"].count_documents({"taskUID": uid}) == 0


def _listed(c) -> set[str]:
    return {t["task_id"] for t in c.get("/api/v1/ai/tasks", params={"limit": 100}).json()["data"]["tasks"]}


def test_result_falls_back_to_mongodb_after_the_ttl(alice, worker):
    task_id = create(alice, "text")["task_id"]
    worker.succeed_text(task_id, "kept in the history")
    obj = worker.mirror(task_id)
    worker.api.delete_namespaced_custom_object(GROUP, VERSION, worker.namespace, PLURAL, task_id)  # as the TTL does
    wait_for(lambda: (alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"].get("phase"),
                      _exists(worker, task_id)), 10, until=lambda v: v == ("Succeeded", False),
             what="the API to answer from MongoDB once the resource is gone: (phase, resource exists)",
             describe=lambda: worker.describe(task_id))
    data = alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]
    assert data["result"]["text_result"] == "kept in the history" and data["status"] == "completed"
    assert task_id in _listed(alice)
    assert obj["metadata"]["uid"]


def _exists(worker, name: str) -> bool:
    try:
        worker.get(name)
        return True
    except client.ApiException as exc:
        assert exc.status == 404
        return False


def test_models_lists_the_catalog(alice):
    r = alice.get("/api/v1/ai/models", params={"type": "image", "provider": "fake"})
    assert r.status_code == 200
    (model,) = r.json()["data"]["models"]
    assert model["model"] == "fake-image" and model["enabled"] is True
    assert "size" in model["parameters"] and model["defaults"]["size"] == "512x512"
    names = {m["model"] for m in alice.get("/api/v1/ai/models").json()["data"]["models"]}
    assert {"doubao-seedream-3-0-t2i-250415", "jimeng_vgfm_t2v_l20", "doubao-pro-4k", "dall-e-3"} <= names


def test_probes_metrics_and_docs(api, alice):
    anonymous = api.client(None)
    assert anonymous.get("/healthz").status_code == 200
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["data"]["cluster"] == "ok"
    assert ready.json()["data"]["mongodb"] == "ok"
    create(alice)
    text = anonymous.get("/metrics").text
    assert 'gentask_api_tasks_created_total{type="image"} 1' in text
    assert 'route="/api/v1/ai/image/task"' in text and "img-" not in text
    assert anonymous.get("/docs").status_code == 200
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert {"/api/v1/ai/image/task", "/api/v1/ai/tasks", "/api/v1/ai/task/{task_id}/cancel"} <= set(paths)
