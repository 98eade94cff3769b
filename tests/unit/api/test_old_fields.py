"""The old server's fields at the top of every view: created, updated, image_url, video_url, text_result, id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gentask.api.schemas import TaskPage
from gentask.api.views import task_view

CREATED, STARTED, DONE = "2026-12-01T10:00:00Z", "2026-12-01T10:00:02Z", "2026-12-01T10:00:09Z"


@pytest.mark.parametrize("times,updated", [
    ({"createdAt": CREATED}, CREATED),
    ({"createdAt": CREATED, "startTime": STARTED}, STARTED),
    ({"createdAt": CREATED, "startTime": STARTED, "completionTime": DONE}, DONE),
    ({"createdAt": CREATED, "completionTime": DONE}, DONE),        # cancelled before it started
    # the worker's node clock a second behind the API server's: a change never precedes the creation
    ({"createdAt": CREATED, "startTime": "2026-12-01T09:59:59Z", "completionTime": "2026-12-01T09:59:59Z"},
     CREATED),
])
def test_updated_is_the_last_change(times, updated):
    view = task_view({"name": "img-a", "phase": "Running", **times}).model_dump(mode="json")
    assert view["created"] == view["created_at"] == CREATED and view["updated"] == updated


def test_the_result_fields_sit_at_the_top_too_and_the_richer_ones_stay():
    result = {"images": [{"artifact": "u/1/image-0.png", "mimeType": "image/png"}],
              "video": {"url": "https://v/clip.mp4", "artifact": "u/1/video.mp4"}, "text": "hello"}
    view = task_view({"_id": "u", "name": "img-a", "type": "image", "phase": "Succeeded", "result": result,
                      "createdAt": CREATED, "completionTime": DONE})
    data = view.model_dump(mode="json")
    assert (data["task_id"], data["id"], data["type"], data["status"]) == ("img-a", "img-a", "image", "completed")
    assert data["image_url"] == data["result"]["image_url"] == "/api/v1/ai/task/img-a/artifacts/image-0.png"
    assert data["video_url"] == data["result"]["video_url"] == "https://v/clip.mp4"
    assert data["text_result"] == data["result"]["text_result"] == "hello"
    assert data["completed_at"] == data["updated"] == DONE
    assert view.uid == "u" and "uid" not in data and "_uid" not in data    # the uid signs links; not shown


def test_updated_never_precedes_created_for_the_mirror_s_datetimes():
    created = datetime(2026, 12, 2, 13, 59, 8, tzinfo=UTC)
    done = datetime(2026, 12, 2, 13, 59, 7, tzinfo=UTC)
    data = task_view({"name": "txt-a", "phase": "Succeeded", "createdAt": created,
                      "completionTime": done}).model_dump(mode="json")
    assert data["completed_at"] == "2026-12-02T13:59:07Z"
    assert data["updated"] == data["created"] == "2026-12-02T13:59:08Z"


def test_without_a_result_the_old_fields_are_null():
    data = task_view({"name": "txt-a", "phase": "Pending"}).model_dump(mode="json")
    assert data["image_url"] is None and data["video_url"] is None and data["text_result"] is None
    assert data["created"] is None and data["updated"] is None


def test_a_page_counts_its_tasks_as_the_old_server_did():
    views = [task_view({"name": f"img-{i}", "phase": "Pending"}) for i in range(3)]
    page = TaskPage(tasks=views, total=7, limit=3, offset=0).model_dump(mode="json")
    assert (page["count"], page["total"]) == (3, 7)
