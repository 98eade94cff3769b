"""Server-sent events, as a client follows them: one task's stream to its end, all of a caller's
tasks, resuming with Last-Event-ID, ownership, heartbeats, limits, disconnects and shutdown.

Some tests have a real operator (inline executor, the fake provider) run the tasks; the others
move tasks along with `Worker`, as the worker pod would, to make exact states at exact times.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import httpx
import pytest

from gentask.domain.task import GROUP, PLURAL, VERSION
from tests.integration.api.conftest import API_KEYS, IMAGE, KEYS, TEXT, answers, create, free_port, launch, mongo_url
from tests.support.sse import Stream
from tests.support.waits import file_progress, wait_for

RANK = {"Pending": 0, "Queued": 1, "Running": 2, "Succeeded": 3, "Failed": 3, "Cancelled": 3}
EVENTS = "/api/v1/ai/events"


def task_events(task_id: str) -> str:
    return f"/api/v1/ai/task/{task_id}/events"


def states(events) -> list[tuple[str, str]]:
    return [(e.data.get("task_id"), e.data.get("phase") or e.event) for e in events]


def has(events, task_id: str, phase: str) -> bool:
    return (task_id, phase) in states(events)


def gauge(api, name: str) -> float:
    for line in httpx.get(f"{api.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


# --- with a real operator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def operated(cluster, module_namespace, tmp_path_factory):
    """An operator running this module's tasks in its own process (inline executor), and an API."""
    from tests.integration.operator.conftest import start_operator, stop_operator
    op = start_operator(cluster, tmp_path_factory.mktemp("sse-operator") / "operator.log",
                        GENTASK_WATCH_NAMESPACES=module_namespace, GENTASK_EXECUTOR="inline",
                        MONGO_URL=mongo_url(cluster), GENTASK_RESYNC_SECONDS="2")
    try:
        api = launch(cluster, module_namespace)
        yield api
        api.stop()
    finally:
        stop_operator(op)


def test_an_image_event_carries_signed_links_that_open_without_a_key(operated):
    """An event's artifact links are the result endpoint's: absolute, signed, usable in an <img src>."""
    alice = operated.client("alice")
    task_id = create(alice, "image", IMAGE)["task_id"]
    with Stream(alice, task_events(task_id)) as s:
        events = s.wait_end(f"image task {task_id} to succeed")
    artifact = events[-1].data["result"]["artifacts"][0]
    assert artifact["url"].startswith(operated.url + "/api/v1/ai/task/") and "signature=" in artifact["url"]
    assert events[-1].data["image_url"] == artifact["url"]
    got = httpx.get(artifact["url"], timeout=30)                     # no key at all
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == artifact["sha256"]


def test_a_task_stream_follows_the_task_to_its_result_and_ends(operated):
    alice = operated.client("alice")
    # 3 s: longer than the inline executor's claim window (GENTASK_INLINE_CLAIM_SECONDS, 1 s), so the
    # task shows Running on the way; a quicker one goes from Pending to its outcome in one write
    task_id = create(alice, "text", {**TEXT, "prompt": "write a haiku [latency:3s]"})["task_id"]
    with Stream(alice, task_events(task_id)) as s:
        assert s.response.headers["content-type"].startswith("text/event-stream")
        assert s.response.headers["cache-control"] == "no-cache"
        assert s.response.headers["x-accel-buffering"] == "no"
        events = s.wait_end(f"task {task_id} to succeed")
    phases = [e.data["phase"] for e in events]
    assert all(e.event == "task" and e.data["task_id"] == task_id for e in events)
    assert [RANK[p] for p in phases] == sorted(RANK[p] for p in phases), phases       # never backwards
    assert phases[-1] == "Succeeded" and "Running" in phases, phases
    assert s.retry == 3000
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), ids
    final = events[-1].data
    assert final["status"] == "completed" and final["result"]["text_result"]
    assert final == alice.get(f"/api/v1/ai/task/result/{task_id}").json()["data"]      # the result endpoint's data


def test_the_all_tasks_stream_shows_the_callers_tasks_and_no_one_elses(operated):
    alice, bob = operated.client("alice"), operated.client("bob")
    with Stream(alice, EVENTS) as s:
        first = create(alice, "text")["task_id"]
        theirs = create(bob, "text")["task_id"]
        second = create(alice, "text")["task_id"]
        events = s.wait(lambda ev: has(ev, first, "Succeeded") and has(ev, second, "Succeeded"),
                        "both of alice's tasks to succeed")
    seen = {e.data["task_id"] for e in events}
    assert {first, second} <= seen and theirs not in seen
    assert all(e.data["user_id"] == "alice" for e in events)


def test_an_admin_follows_every_user_or_one(operated):
    alice, bob, root = operated.client("alice"), operated.client("bob"), operated.client("root")
    with Stream(root, EVENTS) as everyone, Stream(root, EVENTS, params={"user_id": "bob"}) as only_bob:
        mine = create(alice, "text")["task_id"]
        his = create(bob, "text")["task_id"]
        everyone.wait(lambda ev: has(ev, mine, "Succeeded") and has(ev, his, "Succeeded"), "both users' tasks")
        seen = only_bob.wait(lambda ev: has(ev, his, "Succeeded"), "bob's task")
    assert {e.data["user_id"] for e in seen} == {"bob"}
    r = alice.get(EVENTS, params={"user_id": "bob"})
    assert r.status_code == 403 and "only an admin" in r.json()["message"]


def test_curl_reads_the_stream(operated):
    alice = operated.client("alice")
    task_id = create(alice, "text", {**TEXT, "prompt": "a haiku for curl [latency:500ms]"})["task_id"]
    out = subprocess.run(["/usr/bin/curl", "-N", "-sS", "--max-time", "60",
                          "-H", f"Authorization: Bearer {KEYS['alice']}", f"{operated.url}{task_events(task_id)}"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr                   # the server ended the stream: curl did not time out
    assert out.stdout.startswith("retry: 3000\n")
    assert "event: task\n" in out.stdout and '"phase":"Succeeded"' in out.stdout, out.stdout[-2000:]


# --- with the worker's writes made by the test -----------------------------------------------


def test_a_finished_task_gives_one_event_then_the_end(alice, worker):
    task_id = create(alice)["task_id"]
    worker.fail(task_id)
    worker.wait_result(alice, task_id, lambda d: d.get("phase") == "Failed", "failed", 10)
    with Stream(alice, task_events(task_id)) as s:
        (event,) = s.wait_end("the one event of a finished task")
    assert event.data["phase"] == "Failed" and event.data["error"] == "the vendor refused the prompt"
    # resumed after that event: nothing more will come; 204 tells an EventSource to stop reconnecting
    r = alice.get(task_events(task_id), headers={"Last-Event-ID": event.id})
    assert r.status_code == 204 and r.content == b""


def test_the_progress_message_and_each_phase_arrive(alice, worker):
    task_id = create(alice, "video", {"prompt": "a disc", "provider": "fake", "model": "fake-video"})["task_id"]
    with Stream(alice, task_events(task_id)) as s:
        s.wait(lambda ev: len(ev) == 1, "the task's state now")
        worker.run(task_id)
        s.wait(lambda ev: has(ev, task_id, "Running"), "Running")
        worker.patch_status(task_id, {"message": "vendor job running 40% after 3s"})
        s.wait(lambda ev: ev[-1].data.get("message") == "vendor job running 40% after 3s", "the progress message")
        worker.patch_status(task_id, {"phase": "Cancelled", "reason": "Cancelled",
                                      "completionTime": "2026-01-01T00:00:00Z"})
        events = s.wait_end("the cancelled task's stream")
    assert [e.data["phase"] for e in events] == ["Pending", "Running", "Running", "Cancelled"]
    assert events[-1].data["status"] == "cancelled"


def test_a_task_stream_resumed_with_last_event_id_goes_on_from_there(alice, worker):
    task_id = create(alice, "text")["task_id"]
    with Stream(alice, task_events(task_id)) as s:
        (pending,) = s.wait(lambda ev: len(ev) == 1, "the task's state now")
    worker.run(task_id)                                   # while the client is away
    worker.wait_result(alice, task_id, lambda d: d.get("phase") == "Running", "running", 10)
    with Stream(alice, task_events(task_id), headers={"Last-Event-ID": pending.id}) as s:
        s.wait(lambda ev: len(ev) == 1, "the change missed")
        worker.succeed_text(task_id, "done")
        events = s.wait_end("the task's end")
    assert [e.data["phase"] for e in events] == ["Running", "Succeeded"]
    assert int(events[0].id) > int(pending.id)


def test_a_task_only_the_history_has_gives_its_record_then_the_end(api, alice, worker):
    task_id = create(alice, "text")["task_id"]
    worker.succeed_text(task_id, "kept in the history")
    obj = worker.mirror(task_id)
    worker.api.delete_namespaced_custom_object(GROUP, VERSION, worker.namespace, PLURAL, task_id)   # as the TTL does
    wait_for(lambda: gauge(api, "gentask_api_watched_tasks"), 10, until=lambda n: n == 0,
             what="the API's watch to see the task go", describe=lambda: worker.describe(task_id))
    with Stream(alice, task_events(task_id)) as s:
        (event,) = s.wait_end("the history's one event")
    assert event.data["result"]["text_result"] == "kept in the history" and event.data["status"] == "completed"
    assert int(event.id) >= int(obj["metadata"]["resourceVersion"])


def test_a_deleted_task_ends_its_stream_with_a_deleted_event(alice, worker):
    task_id = create(alice)["task_id"]
    with Stream(alice, task_events(task_id)) as s:
        s.wait(lambda ev: len(ev) == 1, "the task's state now")
        assert alice.delete(f"/api/v1/ai/task/{task_id}").status_code == 200
        events = s.wait_end("the deleted task's stream")
    assert events[-1].event == "deleted" and events[-1].data == {"task_id": task_id, "deleted": True}


def test_reconnecting_with_last_event_id_gets_what_it_missed_and_nothing_it_had(alice, worker):
    a, b, gone = create(alice)["task_id"], create(alice, "text")["task_id"], create(alice)["task_id"]
    with Stream(alice, EVENTS) as s:
        s.wait(lambda ev: {a, b, gone} <= {e.data["task_id"] for e in ev}, "the three unfinished tasks")
        worker.run(a)
        had = s.wait(lambda ev: has(ev, a, "Running"), "task a running")
    last = had[-1].id
    # while the client is away: a progresses, b succeeds, c is made, `gone` is deleted
    worker.patch_status(a, {"message": "vendor job running 40% after 3s"})
    worker.succeed_text(b, "done")
    c = create(alice, "text")["task_id"]
    assert alice.delete(f"/api/v1/ai/task/{gone}").status_code == 200
    with Stream(alice, EVENTS, headers={"Last-Event-ID": last}) as again:
        missed = again.wait(lambda ev: any(e.data.get("message", "").startswith("vendor job") for e in ev
                                           if e.data.get("task_id") == a)
                            and has(ev, b, "Succeeded") and has(ev, c, "Pending") and has(ev, gone, "deleted"),
                            "everything missed while away")
    assert all(int(e.id) > int(last) for e in missed), (last, [e.id for e in missed])
    assert not {(e.id, e.data.get("task_id")) for e in missed} & {(e.id, e.data["task_id"]) for e in had}
    ids = [int(e.id) for e in missed]
    assert ids == sorted(ids), ids
    # the query parameter does the same for clients that cannot set headers: after the last id, only what is new
    worker.fail(c)
    with Stream(alice, EVENTS, params={"last_event_id": missed[-1].id}) as third:
        news = third.wait(lambda ev: has(ev, c, "Failed"), "task c failing")
    assert states(news) == [(c, "Failed")]


def test_an_invalid_last_event_id_is_422(alice):
    r = alice.get(EVENTS, headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Last-Event-ID"
    assert alice.get(EVENTS, params={"last_event_id": "-1"}).status_code == 422


def test_another_users_task_is_404_as_on_the_result_endpoint(alice, bob):
    task_id = create(alice)["task_id"]
    for name in (task_id, "img-doesnotexist"):
        stream = bob.get(task_events(name))
        result = bob.get(f"/api/v1/ai/task/result/{name}")
        assert stream.status_code == result.status_code == 404
        assert stream.json() == result.json() == {"success": False, "data": None, "message": f"task {name!r} not found"}


def test_an_idle_stream_gets_heartbeats(start_api):
    api = start_api(api_sse_heartbeat_seconds=0.2)
    with Stream(api.client("alice"), EVENTS) as s:
        wait_for(s.snapshot, 10, until=lambda v: v[1] >= 3, what="three heartbeats", describe=s.describe)
    assert set(s.comments) == {"ping"} and not s.events
    assert s.lines[:2] == ["retry: 3000", ""]


def test_stream_caps_per_user_and_overall_and_disconnects_free_them(start_api):
    api = start_api(api_sse_max_streams_per_user=2, api_sse_max_streams=3)
    alice, bob, root = api.client("alice"), api.client("bob"), api.client("root")
    opened = [Stream(alice, EVENTS), Stream(alice, EVENTS)]
    refused = Stream(alice, EVENTS)
    assert refused.response.status_code == 429 and int(refused.response.headers["retry-after"]) >= 1
    assert "GENTASK_API_SSE_MAX_STREAMS_PER_USER" in refused.response.json()["message"]
    opened.append(Stream(bob, EVENTS))                                        # bob has his own cap
    assert opened[-1].response.status_code == 200
    full = Stream(root, EVENTS)
    assert full.response.status_code == 429 and "GENTASK_API_SSE_MAX_STREAMS" in full.response.json()["message"]
    assert gauge(api, "gentask_api_sse_streams") == 3
    assert 'gentask_api_rejected_total{limit="streams"} 2' in httpx.get(f"{api.url}/metrics").text
    for s in opened:
        s.close()                                                             # the clients go away
    wait_for(lambda: gauge(api, "gentask_api_sse_streams"), 10, until=lambda n: n == 0,
             what="the hub to forget the closed streams")
    with Stream(alice, EVENTS) as s:
        assert s.response.status_code == 200


def test_stopping_the_server_ends_the_streams(start_api):
    api = start_api()
    own = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {KEYS['alice']}"})  # not closed by stop()
    try:
        s = Stream(own, EVENTS)
        wait_for(lambda: gauge(api, "gentask_api_sse_streams"), 10, until=lambda n: n == 1, what="the stream open")
        api.stop()                                # joins the server's thread for up to 15 s
        assert not api.thread.is_alive(), "the server still waits for the open stream"
        s.wait_end("the server's shutdown")
        assert any("shutting down" in c for c in s.comments), s.describe()
    finally:
        own.close()


def test_sigterm_ends_the_streams_of_gentask_api(cluster, namespace, tmp_path):
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MONGO_URL": mongo_url(cluster), "PORT": str(port),
           "GENTASK_NAMESPACE": namespace, "GENTASK_API_KEYS": API_KEYS, "GENTASK_API_HOST": "127.0.0.1"}
    log = tmp_path / "api.log"
    proc = subprocess.Popen([sys.executable, "-m", "gentask", "api"], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEYS['alice']}"}, timeout=10)
    try:
        wait_for(lambda: answers(base, proc), 30, what="gentask api to answer", progress=file_progress(log),
                 describe=lambda: log.read_text()[-3000:])
        s = Stream(c, EVENTS)
        assert s.response.status_code == 200
        s.wait(lambda ev: True, "the stream to start")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError("after SIGTERM the API still waits for the open stream") from None
        assert code in (0, -signal.SIGTERM), log.read_text()[-3000:]
        s.wait_end("the server's shutdown")
    finally:
        c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_the_openapi_document_describes_both_streams(api):
    paths = httpx.get(f"{api.url}/openapi.json").json()["paths"]
    for path in (EVENTS, "/api/v1/ai/task/{task_id}/events"):
        ok = paths[path]["get"]["responses"]["200"]
        assert list(ok["content"]) == ["text/event-stream"], ok
        assert "Last-Event-ID" in ok["description"] and "TaskView" in ok["description"]
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert {"Last-Event-ID", "last_event_id"} <= names
    assert "204" in paths["/api/v1/ai/task/{task_id}/events"]["get"]["responses"]
