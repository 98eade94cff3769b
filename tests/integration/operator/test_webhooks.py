"""Webhooks (spec.notify), delivered by the real operator to a real receiver on loopback.

The operator of this module watches wh-* namespaces (not the suite's t-*) and allowlists
127.0.0.1 as written; its retries start at 0.3 s. Every signature is checked with the Standard
Webhooks reference library. Tasks are fake text tasks run by Job pods on the process node.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client
from standardwebhooks import Webhook

from tests.integration.operator.conftest import (
    Tasks,
    free_port,
    log_tail,
    start_operator,
    stop_operator,
    worker_namespace,
)
from tests.support.waits import wait_for
from tests.support.webhooks import Listener, Receiver

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "webhook-receiver.py"
KEY = "whsec_" + base64.b64encode(b"task-namespace-signing-key-0001").decode()
DEFAULT_KEY = "whsec_" + base64.b64encode(b"operator-default-signing-key-02").decode()
SETTINGS = {"GENTASK_WEBHOOK_ALLOW": "127.0.0.1", "GENTASK_WEBHOOK_RETRY_BASE": "0.3",
            "GENTASK_WEBHOOK_HORIZON": "15s", "GENTASK_WEBHOOK_SIGNING_KEY": DEFAULT_KEY}


def _namespace(cluster, prefix: str) -> str:
    name = worker_namespace(cluster, prefix, labels={"gentask.io/test": "true"})
    client.CoreV1Api(cluster.api).create_namespaced_secret(
        name, {"metadata": {"name": "hook-key"}, "stringData": {"signingKey": KEY}})
    return name


@pytest.fixture(scope="module")
def hook_operator(cluster, tmp_path_factory):
    op = start_operator(cluster, tmp_path_factory.mktemp("webhooks") / "operator.log",
                        GENTASK_WATCH_NAMESPACES="wh-*", **SETTINGS)
    # A glob scope: Kopf finds wh-* namespaces with a namespace watch of its own, which can take a
    # while to begin after the start (30 s once, on a busy machine). Until it has, a new namespace's
    # task is started by the resync but its changes reach no handler, and with a 15 s horizon its
    # webhooks are given up. So the module starts once a task of a warm-up namespace has reached
    # Kopf's handler through the watch (a slow one: a finished task is in no watch).
    warm = _namespace(cluster, "wh-warm")
    try:
        tasks = Tasks(cluster, warm, op.log)
        name = tasks.create(type="text", model="fake-text", prompt="warm-up [latency:300s]")  # stays in the watch
        seen = f'"name": "{name}", "uid"'
        wait_for(lambda: sum(1 for line in op.log.read_text(errors="replace").splitlines()
                             if "Handler 'task_event'" in line and seen in line), 180, interval=0.5,
                 until=lambda n: n >= 1, what=f"Kopf's watch of the wh-* namespaces to deliver {warm}/{name}",
                 **tasks.watching(name))
    finally:
        client.CoreV1Api(cluster.api).delete_namespace(warm, propagation_policy="Background")
    yield op
    stop_operator(op)


@pytest.fixture
def hook_tasks(cluster, hook_operator):
    name = _namespace(cluster, "wh")
    yield Tasks(cluster, name, hook_operator.log)
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def notify(url: str, *events: str, secret: str | None = "hook-key") -> dict:
    spec: dict = {"url": url}
    if events:
        spec["events"] = list(events)
    if secret:
        spec["secretRef"] = {"name": secret}
    return spec


def text_task(tasks: Tasks, hook: dict, prompt: str = "tell me") -> str:
    return tasks.create(type="text", model="fake-text", prompt=prompt, notify=hook)


def wait_notes(tasks: Tasks, name: str, until, what: str, timeout: float = 60) -> dict:
    """The task's status once until(status.notifications) holds (the task may well be finished by then)."""
    return wait_for(lambda: tasks.status(name), timeout, what=f"task {tasks.ns}/{name}: {what}",
                    until=lambda s: until(s.get("notifications") or []), **tasks.watching(name))


def settled(tasks: Tasks, name: str, count: int, what: str, timeout: float = 60) -> list[dict]:
    """status.notifications once `count` entries are there and none is Pending."""
    status = wait_notes(tasks, name, lambda n: len(n) == count and all(e["state"] != "Pending" for e in n),
                        what, timeout)
    return status["notifications"]


def verified(received, key: str = KEY) -> dict:
    """The event, once the reference library accepted its signature."""
    return Webhook(key).verify(received.body, received.headers)


def test_every_chosen_event_arrives_once_signed(hook_operator, hook_tasks, receiver):
    name = text_task(hook_tasks, notify(receiver.url, "queued", "running", "succeeded"))
    notes = settled(hook_tasks, name, 3, "three events delivered")
    assert [n["event"] for n in notes] == ["queued", "running", "succeeded"]
    assert {n["state"] for n in notes} == {"Delivered"} and {n["attempts"] for n in notes} == {1}
    got = receiver.requests()
    assert sorted(r.id for r in got) == sorted(n["id"] for n in notes)        # each id once, nothing else
    events = {verified(r)["type"]: verified(r) for r in got}
    assert set(events) == {"io.gentask.task.queued", "io.gentask.task.running", "io.gentask.task.succeeded"}
    done = events["io.gentask.task.succeeded"]
    assert done["specversion"] == "1.0" and done["subject"] == f"{hook_tasks.ns}/{name}"
    assert done["source"] == f"/apis/gentask.io/v1alpha1/namespaces/{hook_tasks.ns}/generationtasks"
    assert done["datacontenttype"] == "application/json"
    status = hook_tasks.status(name)
    assert done["time"] == status["completionTime"]
    data = done["data"]
    assert data["task_id"] == name and data["status"] == "completed" and data["phase"] == "Succeeded"
    assert data["result"]["text_result"] == status["result"]["text"] and data["user_id"] == "tester"
    for r in got:
        assert r.headers["content-type"] == "application/json"
        assert abs(int(r.headers["webhook-timestamp"]) - r.at) < 30
    assert hook_operator.metric("gentask_webhook_deliveries_total", event="succeeded", outcome="delivered") >= 1
    assert hook_operator.metric("gentask_webhook_delivery_lag_seconds_count", event="succeeded") >= 1
    assert hook_operator.metric("gentask_webhook_attempts_total", event="queued", result="2xx") >= 1


def test_the_default_is_the_outcome_only_signed_with_the_operator_key(hook_tasks, receiver):
    name = text_task(hook_tasks, notify(receiver.url, secret=None))
    notes = settled(hook_tasks, name, 1, "the outcome delivered")
    assert notes[0]["event"] == "succeeded" and notes[0]["state"] == "Delivered"
    [only] = receiver.requests()
    assert verified(only, DEFAULT_KEY)["type"] == "io.gentask.task.succeeded"


def test_a_receiver_that_fails_three_times_gets_the_event_after_backoff(hook_operator, hook_tasks, receiver):
    failed_before = hook_operator.metric("gentask_webhook_attempts_total", event="succeeded", result="5xx")
    receiver.script = [(500, {})] * 3
    name = text_task(hook_tasks, notify(receiver.url))
    [note] = settled(hook_tasks, name, 1, "the outcome delivered after three 500s")
    assert note["state"] == "Delivered" and note["attempts"] == 4
    got = receiver.requests()
    assert [r.status for r in got] == [500, 500, 500, 200]
    assert len({r.id for r in got}) == 1 and got[0].id == note["id"]          # one event, one id, every attempt
    for r in got:
        assert verified(r)["id"] == note["id"]
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert gaps[2] >= gaps[0] and gaps[0] >= 0.1, gaps                        # exponential, from 0.3 s
    assert hook_operator.metric("gentask_webhook_attempts_total", event="succeeded", result="5xx") \
        - failed_before >= 3


def test_retry_after_of_a_429_is_honoured(hook_tasks, receiver):
    receiver.script = [(429, {"Retry-After": "3"})]
    name = text_task(hook_tasks, notify(receiver.url))
    [note] = settled(hook_tasks, name, 1, "the outcome delivered after a 429")
    first, second = receiver.requests()
    assert (first.status, second.status) == (429, 200) and note["attempts"] == 2
    assert second.at - first.at >= 2.9, second.at - first.at                  # not the 0.3 s backoff


def test_an_answer_that_is_not_retried_gives_up_at_once_with_a_warning(cluster, hook_tasks, receiver):
    receiver.default = 404
    name = text_task(hook_tasks, notify(receiver.url))
    [note] = settled(hook_tasks, name, 1, "the outcome given up")
    assert note["state"] == "Failed" and note["attempts"] == 1 and "HTTP 404" in note["lastError"]
    assert len(receiver.requests()) == 1
    events = client.CoreV1Api(cluster.api).list_namespaced_event(
        hook_tasks.ns, field_selector=f"involvedObject.name={name}").items
    [warning] = [e for e in events if e.reason == "WebhookFailed"]
    assert warning.type == "Warning" and "HTTP 404" in warning.message and "/hook" not in warning.message


def test_a_receiver_that_never_answers_well_is_given_up_at_the_horizon(hook_tasks, receiver):
    receiver.default = 503
    name = text_task(hook_tasks, notify(receiver.url))
    [note] = settled(hook_tasks, name, 1, "the outcome given up at the 15 s horizon", timeout=90)
    assert note["state"] == "Failed" and "not delivered within GENTASK_WEBHOOK_HORIZON (15s)" in note["lastError"]
    assert "HTTP 503" in note["lastError"] and note["attempts"] >= 4
    at = [r.at for r in receiver.requests()]
    completed = datetime.fromisoformat(hook_tasks.status(name)["completionTime"].replace("Z", "+00:00"))
    assert at[-1] - completed.timestamp() < 17                                # nothing after the horizon


def test_a_missing_secret_waits_and_the_event_goes_once_it_exists(cluster, hook_tasks, receiver):
    name = text_task(hook_tasks, notify(receiver.url, secret="late-key"))
    note = wait_notes(hook_tasks, name, lambda notes: any("late-key" in (n.get("lastError") or "") for n in notes),
                      "to say its signing key Secret is missing")
    [entry] = note["notifications"]
    assert entry["state"] == "Pending" and "Secret" in entry["lastError"] and "does not exist" in entry["lastError"]
    assert receiver.requests() == []                                             # nothing unsigned goes out
    client.CoreV1Api(cluster.api).create_namespaced_secret(hook_tasks.ns, {
        "metadata": {"name": "late-key"}, "stringData": {"signingKey": KEY}})
    [note] = settled(hook_tasks, name, 1, "the outcome delivered once the Secret exists")
    assert note["state"] == "Delivered"
    verified(receiver.requests()[0])


def test_a_key_that_is_not_a_standard_webhooks_key_is_named_not_shown(cluster, hook_tasks, receiver):
    client.CoreV1Api(cluster.api).create_namespaced_secret(hook_tasks.ns, {
        "metadata": {"name": "bad-key"}, "stringData": {"signingKey": "hunter2-not-a-whsec-key"}})
    name = text_task(hook_tasks, notify(receiver.url, secret="bad-key"))
    status = wait_notes(hook_tasks, name, lambda notes: any(n.get("lastError") for n in notes),
                        "to say its signing key is not usable")
    error = status["notifications"][0]["lastError"]
    assert "key signingKey of Secret" in error and "expected whsec_<base64>" in error
    assert "hunter2" not in json.dumps(status) and receiver.requests() == []


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hook",
                                 "http://localhost:{port}/hook", "http://[::ffff:127.0.0.1]:{port}/hook"])
def test_a_receiver_gentask_may_not_call_fails_the_task_and_gets_nothing(cluster, hook_tasks, url):
    listener = Listener()           # what localhost (and the mapped address) would reach: it must see nothing
    try:
        name = text_task(hook_tasks, notify(url.format(port=listener.port)))
        status = hook_tasks.wait_phase(name, "Failed", "Succeeded")
        assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
        assert "spec.notify.url" in status["message"] and "gentask does not call" in status["message"]
        assert "jobName" not in status and not status.get("attempts")          # it never ran
        [note] = settled(hook_tasks, name, 1, "the failed event refused")
        assert note["state"] == "Failed" and note["lastError"].startswith("refused:")
        assert listener.connections() == 0
    finally:
        listener.close()


def test_the_signing_key_is_never_written_anywhere(cluster, hook_operator, hook_tasks, receiver):
    name = text_task(hook_tasks, notify(receiver.url, "queued", "running", "succeeded"))
    settled(hook_tasks, name, 3, "three events delivered")
    uid = hook_tasks.get(name)["metadata"]["uid"]
    from gentask.config import load_settings
    from gentask.storage import TaskMirror, connect
    mirror = TaskMirror(connect(load_settings(mongo_url=cluster.mongo_url)))
    record = wait_for(lambda: mirror.get(uid), 60, until=lambda r: r and r.get("notifications") and all(
        n["state"] == "Delivered" for n in r["notifications"]), what="the mirror to hold the delivered events",
        **hook_tasks.watching(name))
    events = client.CoreV1Api(cluster.api).list_namespaced_event(hook_tasks.ns).items
    places = {"status": json.dumps(hook_tasks.get(name)), "mongodb": json.dumps(record, default=str),
              "events": json.dumps([e.message for e in events]), "log": hook_operator.log.read_text()}
    for key in (KEY, DEFAULT_KEY):
        for secret in (key, key.removeprefix("whsec_"), base64.b64encode(key.encode()).decode()):
            leaks = [where for where, text in places.items() if secret in text]
            assert not leaks, f"a signing key reached {leaks}"


@pytest.mark.timeout(240)
def test_an_operator_killed_between_two_attempts_resumes_and_sends_once_more(cluster, tmp_path):
    """SIGKILL after a 500 was recorded: the next operator neither forgets the event nor sends the
    acknowledged ones again; it waits for the recorded next attempt."""
    ns = _namespace(cluster, "whk")
    receiver = Receiver(script=[(200, {}), (500, {})])      # queued is acknowledged, the outcome's first try fails
    settings = {**SETTINGS, "GENTASK_WATCH_NAMESPACES": "whk-*", "GENTASK_WEBHOOK_RETRY_BASE": "6",
                "GENTASK_WEBHOOK_HORIZON": "10m"}
    op = start_operator(cluster, tmp_path / "first.log", **settings)
    second = None
    try:
        tasks = Tasks(cluster, ns, op.log)
        name = text_task(tasks, notify(receiver.url, "queued", "succeeded"))
        status = wait_notes(tasks, name, lambda notes: any(n["event"] == "succeeded" and n["attempts"] == 1
                                                           for n in notes),
                            "to record the first, failed attempt of its outcome")
        assert [n["state"] for n in status["notifications"]] == ["Delivered", "Pending"]
        stop_operator(op, signal.SIGKILL)
        killed_at = time.time()
        outcome = next(n for n in status["notifications"] if n["event"] == "succeeded")
        assert outcome["state"] == "Pending" and outcome["lastError"] == "the receiver answered HTTP 500"
        due = datetime.fromisoformat(outcome["nextAttemptTime"].replace("Z", "+00:00")).timestamp()
        assert due > killed_at, "the retry came before the kill; the test proves nothing"
        second = start_operator(cluster, tmp_path / "second.log", **settings)
        tasks = Tasks(cluster, ns, second.log)
        notes = settled(tasks, name, 2, "both events delivered by the second operator", timeout=90)
        assert {n["state"] for n in notes} == {"Delivered"}
        got = receiver.requests()
        by_id: dict[str, list] = {}
        for r in got:
            by_id.setdefault(r.id, []).append(r)
        queued = next(n for n in notes if n["event"] == "queued")
        assert len(by_id[queued["id"]]) == 1, "the acknowledged event was sent again"
        assert [r.status for r in by_id[outcome["id"]]] == [500, 200]
        assert by_id[outcome["id"]][1].at >= due - 0.5                            # the recorded schedule held
        for r in got:
            verified(r)
    except AssertionError:
        print(log_tail(op.log, 60))
        raise
    finally:
        stop_operator(op)
        if second is not None:
            stop_operator(second)
        receiver.close()
        client.CoreV1Api(cluster.api).delete_namespace(ns, propagation_policy="Background")


def test_progress_notes_and_the_outcome_of_a_video_arrive(hook_tasks, receiver):
    name = hook_tasks.create(type="video", model="fake-video", prompt="a slow pan [latency:3s]",
                             params={"duration": 1}, notify=notify(receiver.url, "progress", "succeeded"))
    wait_notes(hook_tasks, name, lambda notes: any(n["event"] == "succeeded" and n["state"] == "Delivered"
                                                   for n in notes), "the outcome delivered")
    events = [verified(r) for r in receiver.requests()]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "io.gentask.task.succeeded" and "io.gentask.task.progress" in kinds, kinds
    progress = [e for e in events if e["type"] == "io.gentask.task.progress"]
    assert all(e["data"]["phase"] == "Running" and e["data"]["message"].startswith("vendor job") for e in progress)
    assert len({e["id"] for e in events}) == len(events)                      # a new note is a new event


def test_a_cancelled_task_tells_it(hook_tasks, receiver):
    name = hook_tasks.create(type="video", model="fake-video", prompt="a long take [latency:60s]",
                             params={"duration": 1}, notify=notify(receiver.url, "cancelled"))
    hook_tasks.wait_status(name, lambda s: s.get("providerTaskID"), what="to start its vendor job")
    hook_tasks.patch_spec(name, cancel=True)
    [note] = settled(hook_tasks, name, 1, "the cancel delivered")
    assert note["event"] == "cancelled" and note["state"] == "Delivered"
    [got] = receiver.requests()
    event = verified(got)
    assert event["type"] == "io.gentask.task.cancelled" and event["data"]["status"] == "cancelled"
    assert event["data"]["cancel_requested"] is True


def _answers(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_documented_receiver_verifies_and_prints_each_event_once(hook_tasks):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), str(port)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "GENTASK_WEBHOOK_SIGNING_KEY": KEY})
    try:
        wait_for(lambda: _answers(port), 30, what="examples/webhook-receiver.py to listen",
                 abort=lambda _v: proc.poll() is not None and f"it exited with {proc.returncode}")
        name = text_task(hook_tasks, notify(f"http://127.0.0.1:{port}/", "running", "succeeded"))
        notes = settled(hook_tasks, name, 2, "both events delivered to the example receiver")
        assert {n["state"] for n in notes} == {"Delivered"}
        forged = urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{}", method="POST", headers={
            "webhook-id": "evt_forged", "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1," + base64.b64encode(b"x" * 32).decode()})
        try:
            urllib.request.urlopen(forged, timeout=10)
            raise AssertionError("the example receiver took a forged event")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    printed = [json.loads(line) for line in out.splitlines()]
    assert [(p["type"], p["subject"]) for p in printed] == [("io.gentask.task.running", f"{hook_tasks.ns}/{name}"),
                                                            ("io.gentask.task.succeeded", f"{hook_tasks.ns}/{name}")]
    assert printed[1]["status"] == "completed"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("executor", ["inline", "pool"])
def test_the_inline_and_pool_executors_deliver_the_same_events_once(cluster, tmp_path, executor):
    """No Job, and (pool) workers whose guarded writes meet the operator's notification writes."""
    prefix = f"whx{executor[0]}"
    ns = _namespace(cluster, prefix)
    receiver = Receiver()
    op = start_operator(cluster, tmp_path / "operator.log", **{
        **SETTINGS, "GENTASK_WATCH_NAMESPACES": f"{prefix}-*", "GENTASK_EXECUTOR": executor,
        "GENTASK_POOL_LEASE_NAMESPACE": ns})
    pool = None
    try:
        if executor == "pool":
            pool = subprocess.Popen([sys.executable, "-m", "gentask", "worker", "pool"],
                                    env={**op.env, "POD_NAME": f"pool-{ns}", "GENTASK_METRICS_PORT": "0"},
                                    stdout=open(tmp_path / "pool.log", "ab"), stderr=subprocess.STDOUT,
                                    start_new_session=True)
        tasks = Tasks(cluster, ns, op.log, tmp_path / "pool.log")
        names = [text_task(tasks, notify(receiver.url, "queued", "running", "succeeded"), prompt=f"{executor} {i}")
                 for i in range(3)]
        ids = []
        for name in names:
            notes = settled(tasks, name, 3, "three events delivered")
            assert [(n["event"], n["state"], n["attempts"]) for n in notes] == [
                ("queued", "Delivered", 1), ("running", "Delivered", 1), ("succeeded", "Delivered", 1)]
            status = tasks.status(name)
            assert status["phase"] == "Succeeded" and status["attempts"] == 1
            ids += [n["id"] for n in notes]
        assert sorted(receiver.ids()) == sorted(ids)                             # each once
        for r in receiver.requests():
            verified(r)
    finally:
        if pool is not None and pool.poll() is None:
            os.killpg(pool.pid, signal.SIGTERM)
            pool.wait(40)
        stop_operator(op)
        receiver.close()
        client.CoreV1Api(cluster.api).delete_namespace(ns, propagation_policy="Background")
