"""GET /api/v1/ai/tasks: pages of a user's history from MongoDB, filters, and the edges of paging."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import IMAGE, TEXT, VIDEO, Worker, create, launch
from tests.support.waits import wait_for


@pytest.fixture(scope="module")
def listing(cluster, module_namespace):
    api = launch(cluster, module_namespace)
    yield api
    api.stop()


@pytest.fixture(scope="module")
def alice(listing):
    return listing.client("alice")


@pytest.fixture(scope="module")
def history(listing, alice, cluster, module_namespace):
    """alice: 12 images, 6 texts, 4 videos in assorted phases; bob: 2 texts."""
    bob, worker = listing.client("bob"), Worker(cluster, module_namespace)
    made = {"image": [create(alice, "image", {**IMAGE, "prompt": f"fox {i}"})["task_id"] for i in range(12)],
            "text": [create(alice, "text", {**TEXT, "prompt": f"poem {i}"})["task_id"] for i in range(6)],
            "video": [create(alice, "video", VIDEO)["task_id"] for _ in range(4)]}
    bobs = [create(bob, "text")["task_id"] for _ in range(2)]
    worker.succeed_text(made["text"][0], "a poem")
    worker.fail(made["image"][0])
    worker.patch_status(made["video"][0], {"phase": "Queued", "reason": "JobCreated"})
    worker.run(made["video"][1])
    for name in (made["text"][0], made["image"][0], made["video"][0], made["video"][1]):
        worker.mirror(name)                        # as the operator mirrors each status change
    wait_for(lambda: alice.get("/api/v1/ai/tasks").json()["data"]["total"], 15, until=lambda n: n == 22,
             what="22 mirrored")
    return made, bobs


def _page(c, **params) -> dict:
    r = c.get("/api/v1/ai/tasks", params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_pages_cover_everything_once_newest_first(history, alice):
    made, bobs = history
    seen, offset = [], 0
    while True:
        page = _page(alice, limit=5, offset=offset)
        assert page["total"] == 22 and page["limit"] == 5 and page["offset"] == offset
        seen += page["tasks"]
        if len(page["tasks"]) < 5:
            break
        offset += 5
    ids = [t["task_id"] for t in seen]
    assert len(ids) == len(set(ids)) == 22
    assert set(ids) == {i for names in made.values() for i in names}
    stamps = [t["created_at"] for t in seen]
    assert stamps == sorted(stamps, reverse=True)
    assert [t["task_id"] for t in _page(alice, limit=5, offset=5)["tasks"]] == ids[5:10]      # stable
    assert not set(bobs) & set(ids)


def test_edges_of_paging(history, alice):
    assert _page(alice)["limit"] == 20 and len(_page(alice)["tasks"]) == 20             # the default page
    assert len(_page(alice, limit=100)["tasks"]) == 22
    beyond = _page(alice, offset=22)
    assert beyond["tasks"] == [] and beyond["total"] == 22
    assert _page(alice, offset=1000)["tasks"] == []
    assert len(_page(alice, limit=1, offset=21)["tasks"]) == 1
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "ten"}):
        r = alice.get("/api/v1/ai/tasks", params=bad)
        assert r.status_code == 422, bad
        assert r.json()["errors"][0]["field"] in bad


def test_filters_on_type_and_status(history, alice):
    made, _ = history
    assert {t["task_id"] for t in _page(alice, type="video", limit=100)["tasks"]} == set(made["video"])
    assert _page(alice, type="text")["total"] == 6
    done = _page(alice, status="completed")
    assert [t["task_id"] for t in done["tasks"]] == [made["text"][0]]
    assert done["tasks"][0]["result"]["text_result"] == "a poem"
    assert [t["task_id"] for t in _page(alice, status="failed")["tasks"]] == [made["image"][0]]
    assert [t["task_id"] for t in _page(alice, status="processing")["tasks"]] == [made["video"][1]]
    pending = _page(alice, status="pending", limit=100)
    assert pending["total"] == 19 and made["video"][0] in {t["task_id"] for t in pending["tasks"]}
    assert [t["task_id"] for t in _page(alice, status="pending", limit=3, offset=2)["tasks"]] == \
        [t["task_id"] for t in pending["tasks"][2:5]]
    assert _page(alice, type="image", status="completed")["total"] == 0
    deep = _page(alice, status="pending", limit=100, offset=5000)       # one query: no depth limit
    assert deep["tasks"] == [] and deep["total"] == 19
