"""API keys, ownership on every verb, admin, and authentication turned off."""

from __future__ import annotations

from tests.integration.api.conftest import IMAGE, KEYS, TEXT, create
from tests.support.waits import wait_for


def test_requests_without_a_known_key_get_401(api):
    nobody = api.client(None)
    r = nobody.post("/api/v1/ai/image/task", json=IMAGE)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json() == {"success": False, "data": None, "message": r.json()["message"]}
    stranger = api.client("not-a-key-at-all")
    r = stranger.get("/api/v1/ai/tasks")
    assert r.status_code == 401 and "not-a-key" not in r.text
    assert nobody.get("/api/v1/ai/models").status_code == 401
    assert nobody.get("/healthz").status_code == 200            # probes need no key


def test_x_api_key_header_works_like_bearer(api):
    c = api.client("bob", header="x-api-key")
    assert create(c)["user_id"] == "bob"


def test_other_users_tasks_are_not_found_on_every_verb(alice, bob, worker):
    task_id = create(alice)["task_id"]
    worker.succeed_image(task_id)
    worker.wait_result(alice, task_id, lambda d: d.get("status") == "completed", "completed", 10)
    signed = alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]["result"]["artifacts"][0]["url"]
    link = signed.split("?", 1)[0]            # the header path (a signed link is for anyone who holds it)
    for r in (bob.get(f"/api/v1/ai/task/result/{task_id}"), bob.post(f"/api/v1/ai/task/{task_id}/cancel"),
              bob.get(link), bob.delete(f"/api/v1/ai/task/{task_id}")):
        assert r.status_code == 404, r.request.url
        assert r.json()["success"] is False and "alice" not in r.text
    assert alice.get(link).status_code == 200                    # bob's delete did nothing
    wait_for(lambda: _listed(alice), 10, until=lambda ids: task_id in ids, what="alice's task in her list",
             describe=lambda: worker.describe(task_id))
    assert task_id not in _listed(bob)


def test_admin_sees_and_acts_on_everyones_tasks(alice, bob, root):
    a = create(alice)["task_id"]
    b = create(bob, "text")["task_id"]
    assert root.get(f"/api/v1/ai/task/result/{a}").json()["data"]["user_id"] == "alice"
    wait_for(lambda: _listed(root), 10, until=lambda ids: {a, b} <= ids,
             what=f"both tasks {a}, {b} in the admin's list")
    assert _listed(root, user_id="bob") == {b}
    assert root.post(f"/api/v1/ai/task/{b}/cancel").status_code == 200


def test_user_id_must_be_the_callers_unless_admin(alice, root):
    r = alice.post("/api/v1/ai/image/task", json={**IMAGE, "user_id": "bob"})
    assert r.status_code == 403 and r.json()["success"] is False
    assert alice.post("/api/v1/ai/image/task", json={**IMAGE, "user_id": "alice"}).status_code == 200
    assert alice.get("/api/v1/ai/tasks", params={"user_id": "bob"}).status_code == 403
    assert alice.get("/api/v1/ai/tasks", params={"user_id": "alice"}).status_code == 200
    on_behalf = create(root, "image", {**IMAGE, "user_id": "carol"})
    assert on_behalf["user_id"] == "carol"
    assert alice.get(f"/api/v1/ai/task/result/{on_behalf['task_id']}").status_code == 404


def test_authentication_off_for_local_development(start_api):
    api = start_api(auth_disabled=True, api_keys=None)
    c = api.client(None)
    r = c.post("/api/v1/ai/text/task", json=TEXT)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "user_id"
    data = create(c, "text", {**TEXT, "user_id": "dev"})
    assert data["user_id"] == "dev"
    assert c.get(f"/api/v1/ai/task/result/{data['task_id']}").status_code == 200


def test_keys_never_reach_responses_or_logs(api, alice, caplog):
    caplog.set_level("DEBUG")
    create(alice)
    api.client("root").get("/api/v1/ai/tasks")
    api.client("wrong-key-123456").get("/api/v1/ai/tasks")
    for key in KEYS.values():
        assert key not in caplog.text
    assert "wrong-key-123456" not in caplog.text


def _listed(c, **params) -> set[str]:
    r = c.get("/api/v1/ai/tasks", params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    return {t["task_id"] for t in r.json()["data"]["tasks"]}
