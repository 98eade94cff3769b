"""callback_url over REST: checked at create time (422 naming the field), put on the resource as
spec.notify, delivered by the operator, and its deliveries shown at /task/{id}/callbacks."""

from __future__ import annotations

import base64

import pytest
from kubernetes import client
from standardwebhooks import Webhook

from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.integration.api.conftest import TEXT, create
from tests.integration.conftest import wait_default_account
from tests.integration.operator.conftest import start_operator, stop_operator
from tests.support.waits import wait_for
from tests.support.webhooks import Listener, Receiver

KEY = "whsec_" + base64.b64encode(b"the-deployment-default-key-0003").decode()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooks_api(start_api):
    return start_api(webhook_allow=["127.0.0.1"])


def resource(cluster, namespace: str, name: str) -> dict:
    return client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def tasks_in(cluster, namespace: str) -> list:
    return client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                              PLURAL)["items"]


def test_the_openapi_document_shows_callback_url_and_its_event_filter(api):
    doc = api.client().get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for request in ("ImageTaskRequest", "VideoTaskRequest", "TextTaskRequest"):
        fields = schemas[request]["properties"]
        assert "callback_url" in fields and "Volcengine Ark" in fields["callback_url"]["description"]
        assert "callback_events" in fields
    enum = next(s for name, s in schemas.items() if name == "NotifyEvent")["enum"]
    assert enum == ["queued", "running", "progress", "succeeded", "failed", "cancelled"]
    assert "/api/v1/ai/task/{task_id}/callbacks" in doc["paths"]


def test_a_callback_url_becomes_the_tasks_spec_notify(cluster, hooks_api, receiver):
    alice = hooks_api.client("alice")
    data = create(alice, "text", {**TEXT, "callback_url": receiver.url, "callback_events": ["running", "succeeded"]})
    assert resource(cluster, hooks_api.namespace, data["task_id"])["spec"]["notify"] == {
        "url": receiver.url, "events": ["running", "succeeded"]}
    plain = create(alice, "text", {**TEXT, "callback_url": receiver.url})
    notify = resource(cluster, hooks_api.namespace, plain["task_id"])["spec"]["notify"]
    assert notify == {"url": receiver.url, "events": ["succeeded", "failed", "cancelled"]}    # the default
    body = alice.get(f"/api/v1/ai/task/{plain['task_id']}/callbacks").json()["data"]
    assert body == {"task_id": plain["task_id"], "callback_url": receiver.url,
                    "callback_events": ["succeeded", "failed", "cancelled"], "deliveries": []}


@pytest.mark.parametrize("url,words", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
    ("http://localhost:{port}/hook", "host localhost resolves to 127.0.0.1, a loopback address"),
    ("http://[::ffff:127.0.0.1]:{port}/hook", "loopback"),
    ("http://100.64.1.1/hook", "CGNAT"),
    ("http://[fd00::1]/hook", "unique-local"),
    ("ftp://example.com/hook", "must be an http or https URL"),
    ("https://me:secret@example.com/hook", "must not carry credentials"),
    ("http://no-such-host.invalid/hook", "does not resolve"),
])
def test_a_callback_url_gentask_may_not_call_is_422_and_nothing_is_made_or_called(cluster, hooks_api, url, words):
    listener = Listener()
    try:
        target = url.format(port=listener.port)
        r = hooks_api.client("alice").post("/api/v1/ai/text/task", json={**TEXT, "callback_url": target})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["success"] is False and words in body["message"]
        [error] = body["errors"]
        assert error["field"] == "callback_url" and error["value"] == target and words in error["message"]
        assert "public receiver" in error["accepted"]
        assert tasks_in(cluster, hooks_api.namespace) == []
        assert listener.connections() == 0
    finally:
        listener.close()


def test_callback_events_need_a_callback_url_and_known_words(hooks_api, receiver):
    alice = hooks_api.client("alice")
    r = alice.post("/api/v1/ai/text/task", json={**TEXT, "callback_events": ["succeeded"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "callback_events"
    r = alice.post("/api/v1/ai/text/task", json={**TEXT, "callback_url": receiver.url, "callback_events": ["done"]})
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["field"] == "callback_events[0]" and "succeeded" in error["accepted"]


def test_production_wants_https_except_for_an_allowlisted_host(start_api, receiver):
    prod = start_api(environment="production", webhook_allow=["127.0.0.1"]).client("alice")
    r = prod.post("/api/v1/ai/text/task", json={**TEXT, "callback_url": "http://example.com/hook"})
    assert r.status_code == 422 and "must use https" in r.json()["message"]
    assert create(prod, "text", {**TEXT, "callback_url": receiver.url})["task_id"]


@pytest.mark.timeout(240)
def test_a_rest_task_tells_its_callback_url_signed_with_the_deployment_key(cluster, namespace, hooks_api, receiver,
                                                                          tmp_path):
    core = client.CoreV1Api(cluster.api)
    wait_default_account(cluster, namespace)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "gentask-credentials"},
                                              "stringData": {"MONGO_URL": cluster.mongo_url}})
    op = start_operator(cluster, tmp_path / "operator.log", GENTASK_WATCH_NAMESPACES=namespace,
                        GENTASK_WEBHOOK_ALLOW="127.0.0.1", GENTASK_WEBHOOK_SIGNING_KEY=KEY)
    try:
        alice, bob = hooks_api.client("alice"), hooks_api.client("bob")
        task_id = create(alice, "text", {**TEXT, "callback_url": receiver.url})["task_id"]

        def deliveries() -> dict:
            return alice.get(f"/api/v1/ai/task/{task_id}/callbacks").json()["data"]
        shown = wait_for(deliveries, 90, what=f"task {task_id}'s outcome to be delivered",
                         until=lambda d: [x["state"] for x in d["deliveries"]] == ["delivered"])
        [delivery] = shown["deliveries"]
        assert delivery["event"] == "succeeded" and delivery["attempts"] == 1 and delivery["delivered_at"]
        [got] = receiver.requests()
        event = Webhook(KEY).verify(got.body, got.headers)
        assert got.id == event["id"] == delivery["id"] and event["type"] == "io.gentask.task.succeeded"
        view = alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]
        for field in ("task_id", "user_id", "type", "provider", "model", "prompt", "priority", "status", "phase",
                      "reason", "attempts", "served_by", "params", "fallbacks", "cancel_requested"):
            assert event["data"][field] == view[field], field
        assert event["data"]["result"]["text_result"] == view["result"]["text_result"]
        # the deliveries are the owner's: another user, and an unknown task, get 404
        assert bob.get(f"/api/v1/ai/task/{task_id}/callbacks").status_code == 404
        assert alice.get("/api/v1/ai/task/txt-nosuchtask/callbacks").status_code == 404
        assert hooks_api.client(None).get(f"/api/v1/ai/task/{task_id}/callbacks").status_code == 401
        assert KEY not in op.log.read_text() and KEY.removeprefix("whsec_") not in op.log.read_text()
    finally:
        stop_operator(op)
