"""Limits: a user's request rate, and a cap on a user's unfinished tasks (429 with Retry-After)."""

from __future__ import annotations

import time

from tests.integration.api.conftest import create
from tests.support.waits import wait_for


def test_request_rate_per_user(start_api):
    api = start_api(api_rate_per_user=2, api_rate_burst=3)
    alice, bob = api.client("alice"), api.client("bob")
    codes = [alice.get("/api/v1/ai/models").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429
    r = alice.get("/api/v1/ai/models")
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and r.json()["success"] is False
    assert bob.get("/api/v1/ai/models").status_code == 200             # per user
    time.sleep(0.6)
    assert alice.get("/api/v1/ai/models").status_code == 200           # the bucket refills
    assert 'gentask_api_rejected_total{limit="rate"}' in api.client(None).get("/metrics").text


def test_cap_on_unfinished_tasks(start_api, worker):
    api = start_api(api_max_unfinished_per_user=2)
    alice, bob = api.client("alice"), api.client("bob")
    first = create(alice)["task_id"]
    create(alice, "text")
    r = alice.post("/api/v1/ai/video/task", json={"prompt": "p", "provider": "fake", "model": "fake-video"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "unfinished" in r.json()["message"]
    create(bob)                                                         # bob has his own cap
    worker.fail(first)
    wait_for(lambda: alice.post("/api/v1/ai/text/task", json={"prompt": "p", "provider": "fake",
                                                              "model": "fake-text"}).status_code,
             10, until=lambda code: code == 200, what="a slot freed by the finished task",
             describe=lambda: worker.describe(first))
    r = alice.post("/api/v1/ai/text/task", json={"prompt": "p", "provider": "fake", "model": "fake-text"})
    assert r.status_code == 429


def test_cap_counts_tasks_created_elsewhere(start_api, worker):
    """Another replica's (or kubectl's) tasks count too: the cap reads the cluster, not this process."""
    one = start_api(api_max_unfinished_per_user=1)
    create(one.client("alice"))
    other = start_api(api_max_unfinished_per_user=1)
    r = other.client("alice").post("/api/v1/ai/text/task", json={"prompt": "p", "provider": "fake",
                                                                  "model": "fake-text"})
    assert r.status_code == 429
