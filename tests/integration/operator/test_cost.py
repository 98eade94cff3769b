"""What tasks cost, end to end on the local cluster: tasks created over REST, run by the operator's
Job pods against the local vendor servers (Ark, OpenAI), their status.cost checked against the
price table, the usage endpoint's totals and the operator's cost counters.

One namespace of its own (c-…, out of the session operator's sight), one operator serving it
alone, one database of its own (FerretDB scans a whole collection on every query)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from devcluster.vendors import LocalVendors
from gentask.domain.pricing import PRICES
from tests.integration.api.conftest import RunningAPI, launch
from tests.integration.conftest import Cluster, wait_default_account
from tests.integration.operator.conftest import Operator, log_tail, start_operator, stop_operator
from tests.support.waits import file_progress, wait_for

TERMINAL = ("Succeeded", "Failed", "Cancelled")
SEEDREAM = "doubao-seedream-4-0-250828"
SEEDANCE = "doubao-seedance-1-0-pro-250528"
SEED_TEXT = "doubao-seed-1-6-250615"


@dataclass
class Setup:
    ns: str
    vendors: LocalVendors
    operator: Operator
    api: RunningAPI
    log: Path
    alice: httpx.Client
    bob: httpx.Client
    root: httpx.Client

    def create(self, c: httpx.Client, kind: str, **body) -> str:
        r = c.post(f"/api/v1/ai/{kind}/task", json={"retries": 0, **body})
        assert r.status_code == 200, r.text
        return r.json()["data"]["task_id"]

    def finished(self, c: httpx.Client, task_id: str) -> dict:
        """The task's REST result once it has finished (phase terminal)."""
        def data() -> dict:
            r = c.get(f"/api/v1/ai/task/result/{task_id}")
            return r.json().get("data") or {"http_status": r.status_code, "body": r.text[:500]}
        return wait_for(data, 60, until=lambda d: d.get("phase") in TERMINAL, what=f"task {task_id} to finish",
                        progress=file_progress(self.log), describe=lambda: log_tail(self.log))


@pytest.fixture(scope="module")
def setup(cluster: Cluster, tmp_path_factory) -> Iterator[Setup]:
    core = client.CoreV1Api(cluster.api)
    ns = f"c-{uuid.uuid4().hex[:8]}"
    base, _, query = cluster.mongo_url.partition("?")
    mongo_url = base.rsplit("/", 1)[0] + "/" + ns.replace("-", "_") + (f"?{query}" if query else "")
    core.create_namespace({"metadata": {"name": ns, "labels": {"gentask.io/test": "true"}}})
    log = tmp_path_factory.mktemp("cost") / "operator.log"
    try:
        wait_default_account(cluster, ns)
        with LocalVendors(job_steps=1) as vendors:
            keys = {k: v for k, v in vendors.environ().items() if k.endswith("_KEY")}
            core.create_namespaced_secret(ns, {"metadata": {"name": "gentask-credentials"},
                                               "stringData": {"MONGO_URL": mongo_url, **keys}})
            urls = {k: v for k, v in vendors.environ().items() if k.endswith("_URL")}
            operator = start_operator(cluster, log, GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=mongo_url, **urls)
            api = launch(cluster, ns, mongo_url=mongo_url)
            made = Setup(ns, vendors, operator, api, log, api.client("alice"), api.client("bob"), api.client("root"))
            try:
                yield made
            finally:
                api.stop()
                stop_operator(made.operator)          # a test may have started another one
    finally:
        core.delete_namespace(ns, propagation_policy="Background")


@pytest.fixture
def s(setup: Setup) -> Iterator[Setup]:
    setup.vendors.reset()           # no fault left over from another test
    yield setup
    setup.vendors.reset()


def dec(value: str) -> Decimal:
    return Decimal(value)


def test_succeeded_tasks_cost_what_the_price_table_says(s: Setup, cluster: Cluster):
    image = s.create(s.alice, "image", prompt="a red fox", provider="volcengine", model=SEEDREAM,
                     size="1280x720", n=2)
    video = s.create(s.alice, "video", prompt="waves at dusk", provider="volcengine", model=SEEDANCE,
                     duration=5, resolution="720p")
    text = s.create(s.alice, "text", prompt="write a haiku about rivers", provider="volcengine", model=SEED_TEXT,
                    max_tokens=30)
    got = {t: s.finished(s.alice, t) for t in (image, video, text)}
    for data in got.values():
        assert data["phase"] == "Succeeded", data
    img = got[image]
    assert img["usage"]["images"] == 2
    assert img["cost"]["amount"] == "0.4" and img["cost"]["currency"] == "CNY"       # 2 x 0.2 CNY
    (attempt,) = img["cost"]["attempts"]
    assert attempt["outcome"] == "Succeeded" and attempt["model"] == SEEDREAM and attempt["amount"] == "0.4"
    vid = got[video]
    tokens = 1248 * 704 * 24 * 5 // 1024                                              # what the vendor bills
    assert vid["usage"] == {"video_seconds": 5, "video_tokens": tokens, "images": None, "input_tokens": None,
                            "output_tokens": None}
    assert dec(vid["cost"]["amount"]) == tokens * PRICES[("volcengine", SEEDANCE)].per_1k_video_tokens / 1000
    assert vid["cost"]["attempts"][0]["vendor_task_id"].startswith("cgt-")
    txt = got[text]
    price = PRICES[("volcengine", SEED_TEXT)]
    used = txt["usage"]
    assert used["input_tokens"] > 0 and used["output_tokens"] > 0
    expected = (used["input_tokens"] * price.per_1k_input_tokens
                + used["output_tokens"] * price.per_1k_output_tokens) / 1000
    assert dec(txt["cost"]["amount"]) == expected.quantize(Decimal("0.000001"))
    # the list shows the same
    page = s.alice.get("/api/v1/ai/tasks", params={"limit": 100}).json()["data"]["tasks"]
    listed = {t["task_id"]: t for t in page}
    assert listed[image]["cost"]["amount"] == "0.4" and listed[video]["cost"] == vid["cost"]
    # kubectl shows it with -o wide
    wide = cluster.kubectl("get", "gt", image, "-n", s.ns, "-o", "wide", check=True).stdout.splitlines()
    assert wide[0].split()[-2:] == ["COST", "CURRENCY"] and wide[1].split()[-2:] == ["0.4", "CNY"], wide
    # and the operator counted them, each once, under namespace, user, provider and model
    wait_for(lambda: s.operator.metric("gentask_task_cost_total", namespace=s.ns, user="alice",
                                       provider="volcengine", model=SEEDREAM, currency="CNY"),
             30, until=lambda v: v >= 0.4, what="the cost counter of the image")
    assert s.operator.metric("gentask_task_usage_total", namespace=s.ns, user="alice", model=SEEDANCE,
                             unit="video_tokens") >= tokens


def test_a_request_the_vendor_refuses_with_4xx_costs_nothing(s: Setup):
    s.vendors.ark.inject("bad_request", path="/images")
    image = s.finished(s.alice, s.create(s.alice, "image", prompt="refused", provider="volcengine", model=SEEDREAM,
                                         size="1280x720"))
    s.vendors.ark.inject("bad_request", path="/contents/generations/tasks")
    video = s.finished(s.alice, s.create(s.alice, "video", prompt="never submitted", provider="volcengine",
                                         model=SEEDANCE, duration=5))
    for data in (image, video):
        assert data["phase"] == "Failed" and data["reason"] == "ProviderBadRequest", data
        assert data["cost"]["amount"] == "0" and data["cost"]["currency"] == "CNY"
        (attempt,) = data["cost"]["attempts"]
        assert attempt["outcome"] == "Failed" and attempt["amount"] == "0"
        assert attempt["reason"] == "ProviderBadRequest"
    assert s.vendors.ark.count("GET", "/contents/generations/tasks/") == 0     # nothing was ever polled


def test_a_video_job_that_ran_then_failed_costs_the_usage_the_vendor_reports(s: Setup):
    s.vendors.ark.inject("job_failed", code="OutputVideoSensitiveContentDetected",
                         usage={"completion_tokens": 51480, "total_tokens": 51480})
    data = s.finished(s.alice, s.create(s.alice, "video", prompt="a storm at sea", provider="volcengine",
                                        model=SEEDANCE, duration=5))
    assert data["phase"] == "Failed" and data["reason"] == "ContentRejected", data
    (attempt,) = data["cost"]["attempts"]
    assert attempt["vendor_task_id"].startswith("cgt-") and attempt["usage"]["video_tokens"] == 51480
    assert data["cost"]["amount"] == "0.7722" and data["cost"]["currency"] == "CNY"   # 51,480 x 15 CNY / 1M
    assert data["usage"]["video_tokens"] == 51480


def test_a_task_served_by_its_fallback_shows_the_cost_of_each_attempt(s: Setup):
    s.vendors.ark.inject("server_error", path="/images", times=-1)
    data = s.finished(s.alice, s.create(s.alice, "image", prompt="a lighthouse at night", provider="volcengine",
                                        model=SEEDREAM, fallbacks=[{"provider": "openai",
                                                                    "model": "gpt-image-1-mini"}]))
    assert data["phase"] == "Succeeded" and data["served_by"]["provider"] == "openai", data
    first, second = data["cost"]["attempts"]
    assert (first["provider"], first["outcome"], first["amount"], first["currency"]) == \
        ("volcengine", "Failed", "0", "CNY")
    assert (second["provider"], second["model"], second["outcome"]) == ("openai", "gpt-image-1-mini", "Succeeded")
    price = PRICES[("openai", "gpt-image-1-mini")]
    u = second["usage"]
    expected = (u["input_tokens"] * price.per_1k_input_tokens + u["output_tokens"] * price.per_1k_output_tokens) / 1000
    assert dec(second["amount"]) == expected and second["currency"] == "USD"
    assert data["cost"]["amount"] == second["amount"] and data["cost"]["currency"] == "USD"


def test_the_usage_endpoint_totals_a_users_tasks_and_keeps_others_out(s: Setup):
    mine = [s.create(s.alice, "image", prompt=f"fake {i}", provider="fake", model="fake-image", size="64x64", n=2)
            for i in range(2)]
    theirs = s.create(s.bob, "image", prompt="bob's", provider="fake", model="fake-image", size="64x64")
    for task_id in mine:
        assert s.finished(s.alice, task_id)["cost"]["amount"] == "0.02"         # 2 images x 0.01 XTS
    assert s.finished(s.bob, theirs)["cost"]["amount"] == "0.01"

    def expected_totals(c: httpx.Client) -> dict[str, Decimal]:
        totals: dict[str, Decimal] = {}
        for t in c.get("/api/v1/ai/tasks", params={"limit": 100}).json()["data"]["tasks"]:
            if t["phase"] in TERMINAL and t["cost"]:
                for m in t["cost"]["totals"]:
                    totals[m["currency"]] = totals.get(m["currency"], Decimal(0)) + dec(m["amount"])
        return {c: v for c, v in totals.items() if v}

    def report(c: httpx.Client, **params) -> dict:
        r = c.get("/api/v1/ai/usage", params=params)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    # the mirror lags the cluster a little: wait until it holds every finished task
    want = expected_totals(s.alice)
    got = wait_for(lambda: {m["currency"]: dec(m["amount"]) for m in report(s.alice)["totals"]}, 30,
                   until=lambda totals: totals == want, what="the usage totals to equal the tasks' costs")
    assert got["XTS"] >= Decimal("0.04")
    by_model = {g["key"]: g for g in report(s.alice, group_by="model")["groups"]}
    assert by_model["fake/fake-image"]["cost"] == [{"amount": "0.04", "currency": "XTS"}]
    assert by_model["fake/fake-image"]["usage"]["images"] == 4 and by_model["fake/fake-image"]["tasks"] == 2
    by_day = report(s.alice, group_by="day")["groups"]
    assert sum(g["tasks"] for g in by_day) == report(s.alice)["tasks"]
    assert {g["key"] for g in report(s.alice, group_by="provider")["groups"]} >= {"fake"}
    # a window before every task holds nothing
    empty = report(s.alice, to="2020-01-01T00:00:00Z")
    assert empty["tasks"] == 0 and empty["totals"] == [] and empty["groups"] == []
    # bob sees his own only; alice may not read bob's; an admin may read anyone's
    assert {m["currency"]: m["amount"] for m in report(s.bob)["totals"]} == {"XTS": "0.01"}
    refused = s.alice.get("/api/v1/ai/usage", params={"user_id": "bob"})
    assert refused.status_code == 403 and "only an admin" in refused.json()["message"]
    assert report(s.root, user_id="bob")["totals"] == [{"amount": "0.01", "currency": "XTS"}]
    everyone = {g["key"]: g for g in report(s.root, group_by="user")["groups"]}
    assert set(everyone) >= {"alice", "bob"}
    # bad parameters: 422 saying what is accepted
    for params, words in (({"group_by": "week"}, ["group_by", "model", "provider", "day"]),
                          ({"from": "yesterday"}, ["from"]),
                          ({"from": "2026-12-02T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, ["from must be before to"])):
        r = s.alice.get("/api/v1/ai/usage", params=params)
        assert r.status_code == 422, (params, r.text)
        for word in words:
            assert word in r.text, (params, r.text)


def test_a_restarted_operator_counts_no_finished_task_twice(s: Setup, cluster: Cluster):
    before = s.create(s.alice, "image", prompt="counted once", provider="fake", model="fake-image", size="64x64")
    assert s.finished(s.alice, before)["cost"]["amount"] == "0.01"
    labels = {"namespace": s.ns, "user": "alice", "provider": "fake", "model": "fake-image", "currency": "XTS"}
    wait_for(lambda: s.operator.metric("gentask_task_cost_total", **labels), 30, until=lambda v: v >= 0.01,
             what="the first operator to count the image")
    stop_operator(s.operator)
    kept = ("GENTASK_WATCH_NAMESPACES", "MONGO_URL", "ARK_BASE_URL", "OPENAI_BASE_URL", "VOLCENGINE_VISUAL_BASE_URL")
    s.operator = start_operator(cluster, s.log, **{k: s.operator.env[k] for k in kept})
    after = s.create(s.alice, "image", prompt="counted by the new one", provider="fake", model="fake-image",
                     size="64x64", n=3)
    assert s.finished(s.alice, after)["cost"]["amount"] == "0.03"
    # the new process counts the task it saw finish, and none of those that finished before it
    wait_for(lambda: s.operator.metric("gentask_task_cost_total", **labels), 30, until=lambda v: v > 0,
             what="the new operator to count the new image")
    assert s.operator.metric("gentask_task_cost_total", **labels) == pytest.approx(0.03)
    assert s.operator.metric("gentask_task_usage_total", namespace=s.ns, user="alice", model="fake-image",
                             unit="images") == 3
