"""API keys mapped to namespaces: a caller's tasks are created, read, listed, followed and deleted in
its key's namespace only (`key:user[:role][:namespace=NS]`, docs/tenants.md)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from kubernetes import client

from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.integration.api.conftest import KEYS, TEXT, create, launch
from tests.support.waits import wait_for

TEAM_KEYS = {"ann": "ann-key-of-team-a-1d4f", "ben": "ben-key-of-team-b-9c2e", "boss-b": "boss-key-team-b-77aa"}


@pytest.fixture
def teams(cluster, namespace):
    """Two team namespaces beside the API's own (`namespace`), and an API whose keys map to them."""
    core = client.CoreV1Api(cluster.api)
    run = uuid.uuid4().hex[:6]
    team_a, team_b = f"api-{run}-a", f"api-{run}-b"
    for ns in (team_a, team_b):
        core.create_namespace({"metadata": {"name": ns, "labels": {"gentask.io/test": "true"}}})
    keys = (f"{KEYS['alice']}:alice,{TEAM_KEYS['ann']}:ann:namespace={team_a},"
            f"{TEAM_KEYS['ben']}:ben:namespace={team_b},{TEAM_KEYS['boss-b']}:boss:admin:namespace={team_b}")
    api = launch(cluster, namespace, api_keys=keys)
    try:
        yield api, namespace, team_a, team_b
    finally:
        api.stop()
        for ns in (team_a, team_b):
            core.delete_namespace(ns, propagation_policy="Background")


def _client(api, key: str) -> httpx.Client:
    c = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    api.clients.append(c)
    return c


def _names(cluster, ns: str) -> set[str]:
    items = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
    return {t["metadata"]["name"] for t in items}


def test_each_key_s_tasks_live_in_its_namespace_and_stay_there(cluster, teams):
    api, default_ns, team_a, team_b = teams
    alice, ann = api.client("alice"), _client(api, TEAM_KEYS["ann"])
    ben, boss = _client(api, TEAM_KEYS["ben"]), _client(api, TEAM_KEYS["boss-b"])
    mine = create(alice, "text", TEXT)["task_id"]
    a_task = create(ann, "text", TEXT)["task_id"]
    b_task = create(ben, "text", TEXT)["task_id"]
    # created where each key maps: a key without a namespace keeps GENTASK_NAMESPACE (as before)
    assert mine in _names(cluster, default_ns)
    assert a_task in _names(cluster, team_a) and a_task not in _names(cluster, default_ns)
    assert b_task in _names(cluster, team_b)
    obj = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(GROUP, VERSION, team_a, PLURAL, a_task)
    assert obj["spec"]["userID"] == "ann"
    # each reads its own task
    assert ann.get(f"/api/v1/ai/task/result/{a_task}").json()["data"]["task_id"] == a_task
    # another namespace's task is not found, on every verb, even for that namespace's admin
    for other, task_id in ((ben, a_task), (boss, a_task), (ann, b_task), (alice, a_task)):
        r = other.get(f"/api/v1/ai/task/result/{task_id}")
        assert r.status_code == 404, r.text
        assert other.delete(f"/api/v1/ai/task/{task_id}").status_code == 404
        assert other.post(f"/api/v1/ai/task/{task_id}/cancel").status_code == 404
    assert a_task in _names(cluster, team_a), "a refused delete deleted nothing"
    # team B's admin acts for any user of team B, and only there
    assert boss.get(f"/api/v1/ai/task/result/{b_task}").status_code == 200
    made_for_ben = create(boss, "text", {**TEXT, "user_id": "ben"})["task_id"]
    assert made_for_ben in _names(cluster, team_b)
    # lists: the caller's namespace only (the API mirrors each create, so lists show them at once)
    def listed(c: httpx.Client, **params) -> set[str]:
        return {t["task_id"] for t in c.get("/api/v1/ai/tasks", params=params).json()["data"]["tasks"]}
    wait_for(lambda: listed(ann), 15, until=lambda s: a_task in s, what="ann's list to show her task")
    assert listed(ann) == {a_task}
    wait_for(lambda: listed(boss, user_id="ben"), 15, until=lambda s: {b_task, made_for_ben} <= s,
             what="team B's admin's list of ben")
    assert a_task not in listed(boss, user_id="ann"), "team B's admin must not list team A's tasks"
    # the live stream of a task of another namespace is 404 too; its own namespace's streams
    assert ben.get(f"/api/v1/ai/task/{a_task}/events").status_code == 404
    # delete works in the caller's namespace
    assert ann.delete(f"/api/v1/ai/task/{a_task}").status_code == 200
    wait_for(lambda: _names(cluster, team_a), 15, until=lambda s: a_task not in s, what="team A's task to go")


def test_a_bad_namespace_in_a_key_stops_start_up_without_showing_the_key(cluster, namespace):
    from gentask.config import SettingsError
    with pytest.raises(SettingsError) as err:
        launch(cluster, namespace, api_keys="secret-key-123456:ann:namespace=Team_A")
    assert "entry 1" in str(err.value) and "namespace='Team_A' is not a namespace name" in str(err.value)
    assert "secret-key-123456" not in str(err.value)
