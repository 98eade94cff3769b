"""The old server's client flow, replayed from its README (SweetRetry/volcengine-ai, README.md "API 文档").

The README's requests go out as written: no header (authentication is off here, as the old
server had none; a create then names its user_id, as the README's bodies do), the same bodies,
paths and queries. Every field the README documents is read where it documents it: the create's
`data.{task_id, status, provider, model}`; the result's `data.{task_id, type, status, created,
updated, image_url, video_url, text_result}`; the list's `data.tasks` with `limit`, `offset`
and the old server's `count`, whose entries are its task records (`id`, `type`, `status`,
`created`, `updated`, ...). The result links open without a header, as the vendor URLs the old
server handed out did.
"""

from __future__ import annotations

import re
import subprocess
from datetime import datetime

import httpx
import pytest

from tests.integration.api.conftest import now, sha256
from tests.support.waits import wait_for

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
# the README's bodies, word for word (its video and text models from its model table)
IMAGE = {"prompt": "一只可爱的小猫咪在花园里玩耍", "user_id": "user123", "provider": "volcengine",
         "model": "doubao-seedream-3-0-t2i-250415", "size": "1024x1024"}
VIDEO = {"prompt": "一只可爱的小猫咪在花园里玩耍", "user_id": "user123", "provider": "volcengine",
         "model": "jimeng_vgfm_t2v_l20", "aspect_ratio": "16:9", "seed": -1}
TEXT = {"prompt": "写一首关于春天的诗", "user_id": "user123", "provider": "volcengine", "model": "doubao-pro-4k",
        "max_tokens": 1000, "temperature": 0.7}
PNG = b"\x89PNG\r\n\x1a\n" + b"old-client" * 50
MP4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200


@pytest.fixture
def old(start_api) -> httpx.Client:
    """A client of the old server: no header at all."""
    return start_api(auth_disabled=True).client(None)


def _time(value: str) -> datetime:
    assert isinstance(value, str) and RFC3339.match(value), value
    return datetime.fromisoformat(value)


def _create(old: httpx.Client, kind: str, body: dict) -> str:
    r = old.post(f"/api/v1/ai/{kind}/task", json=body)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["success"] is True and doc["message"]
    data = doc["data"]
    assert (data["status"], data["provider"], data["model"]) == ("pending", body["provider"], body["model"])
    return data["task_id"]


def _poll(old: httpx.Client, worker, task_id: str, status: str) -> dict:
    """GET /api/v1/ai/task/result/{task_id} until data.status says so, as the old clients poll."""
    return worker.wait_result(old, task_id, lambda d: d.get("status") == status, status)


def _curl(url: str) -> bytes:
    proc = subprocess.run(["/usr/bin/curl", "-sS", "--fail", url], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_image_create_poll_until_completed_and_read_data_image_url(old, worker):
    task_id = _create(old, "image", IMAGE)
    pending = old.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]
    assert (pending["task_id"], pending["type"], pending["status"]) == (task_id, "image", "pending")
    assert _time(pending["updated"]) == _time(pending["created"])           # nothing happened yet
    assert pending["image_url"] is None and pending["video_url"] is None and pending["text_result"] is None
    started = now()
    worker.patch_status(task_id, {"phase": "Running", "reason": "Started", "attempts": 1, "startTime": started})
    running = _poll(old, worker, task_id, "processing")
    # updated: the latest change, never before the creation (the worker's clock may lag the API server's)
    assert _time(running["updated"]) == max(_time(started), _time(running["created"]))
    uid = worker.get(task_id)["metadata"]["uid"]
    finished = now()
    worker.patch_status(task_id, {"phase": "Succeeded", "reason": "Completed", "attempts": 1,
                                  "completionTime": finished,
                                  "result": {"images": [worker.store(uid, "image-0", PNG, "image/png")]}})
    data = _poll(old, worker, task_id, "completed")
    assert (data["task_id"], data["type"]) == (task_id, "image")
    assert _time(data["updated"]) == max(_time(finished), _time(data["created"]))
    assert _time(data["created"]) == _time(data["created_at"]) and _time(data["completed_at"]) == _time(finished)
    # data.image_url opens as it is: no header, as in an <img src>
    assert sha256(_curl(data["image_url"])) == sha256(PNG) == data["result"]["artifacts"][0]["sha256"]
    assert data["image_url"] == data["result"]["image_url"]                 # and the richer place agrees


def test_a_vendor_url_is_data_image_url_as_the_old_server_gave_it(old, worker):
    task_id = _create(old, "image", IMAGE)
    worker.succeed_image(task_id, PNG)
    data = _poll(old, worker, task_id, "completed")
    assert data["image_url"] == data["result"]["image_url"] == "https://vendor.example/fox.png"


def test_video_create_poll_and_read_data_video_url(old, worker):
    task_id = _create(old, "video", VIDEO)
    uid = worker.get(task_id)["metadata"]["uid"]
    worker.patch_status(task_id, {"phase": "Succeeded", "reason": "Completed", "attempts": 1, "completionTime": now(),
                                  "result": {"video": worker.store(uid, "video", MP4, "video/mp4")}})
    data = _poll(old, worker, task_id, "completed")
    assert (data["task_id"], data["type"], data["image_url"]) == (task_id, "video", None)
    assert _curl(data["video_url"]) == MP4
    _time(data["created"]), _time(data["updated"])


def test_text_create_poll_and_read_data_text_result(old, worker):
    task_id = _create(old, "text", TEXT)
    worker.succeed_text(task_id, "春眠不觉晓，处处闻啼鸟")
    data = _poll(old, worker, task_id, "completed")
    assert (data["task_id"], data["type"], data["text_result"]) == (task_id, "text", "春眠不觉晓，处处闻啼鸟")
    assert data["image_url"] is None and data["video_url"] is None
    _time(data["created"]), _time(data["updated"])


def test_failed_task_reads_status_failed_and_error(old, worker):
    task_id = _create(old, "image", IMAGE)
    worker.fail(task_id)
    data = _poll(old, worker, task_id, "failed")
    assert data["error"] == "the vendor refused the prompt" and data["image_url"] is None
    assert _time(data["updated"]) == max(_time(data["completed_at"]), _time(data["created"]))


def test_list_and_delete_as_the_readme_calls_them(old, worker):
    image = _create(old, "image", IMAGE)
    worker.succeed_image(image, PNG)
    text = _create(old, "text", TEXT)
    worker.succeed_text(text, "一首诗")
    _poll(old, worker, image, "completed"), _poll(old, worker, text, "completed")
    worker.mirror(image), worker.mirror(text)

    def page(query: str) -> dict:
        return old.get(f"/api/v1/ai/tasks?{query}").json()["data"]
    data = wait_for(lambda: page("user_id=user123&limit=10&offset=0"), 30, what="both tasks in user123's list",
                    until=lambda d: {t["id"] for t in d["tasks"]} >= {image, text} and all(
                        t["status"] == "completed" for t in d["tasks"]))
    assert (data["limit"], data["offset"], data["count"]) == (10, 0, len(data["tasks"]))
    by_id = {t["id"]: t for t in data["tasks"]}
    assert by_id[image]["task_id"] == image and by_id[image]["type"] == "image"
    assert by_id[image]["status"] == "completed" and by_id[image]["image_url"] == "https://vendor.example/fox.png"
    assert by_id[text]["text_result"] == "一首诗"
    for entry in by_id.values():
        assert _time(entry["created"]) <= _time(entry["updated"])
    images = page("user_id=user123&type=image&limit=10&offset=0")
    assert {t["type"] for t in images["tasks"]} == {"image"} and images["count"] == len(images["tasks"])
    r = old.delete(f"/api/v1/ai/task/{image}")
    assert r.status_code == 200 and r.json()["success"] is True
    assert old.get(f"/api/v1/ai/task/result/{image}").status_code == 404
