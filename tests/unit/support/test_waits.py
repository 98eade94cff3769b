"""tests.support.waits: budgets that follow progress, failures that say what things looked like."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support import waits
from tests.support.waits import WaitFailed, describe_namespace, describe_task, wait_for, wait_for_async, watching


class Clock:
    """Time that passes only when the wait sleeps (and a little on every look at the clock)."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now, self.tick, self.slept = 1000.0, tick, 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += max(seconds, 0.01)
        self.slept += seconds

    def since(self, start: float = 1000.0) -> float:
        return self.now - start


@pytest.fixture(autouse=True)
def _no_pytest_alarm(monkeypatch):
    """Unit runs have pytest-timeout's alarm set; these tests decide themselves what is left."""
    monkeypatch.setattr(waits, "time_left_in_test", lambda: None)


def fake(clock: Clock, **kw):
    return {"clock": clock, "sleep": clock.sleep, **kw}


# --- budgets ---------------------------------------------------------------------------------------

def test_a_value_that_keeps_changing_extends_the_wait_past_the_stall_budget():
    clock = Clock()
    # a phase that moves on every 3 s, done after 40 s: slow but moving
    def observe():
        return "done" if clock.since() >= 40 else f"step {int(clock.since() // 3)}"
    got = wait_for(observe, what="a slow task", until=lambda v: v == "done", stall=5, cap=100, **fake(clock))
    assert got == "done" and 40 <= clock.since() < 41


def test_a_progress_token_extends_a_wait_whose_value_does_not_change():
    clock = Clock()
    got = wait_for(lambda: clock.since() >= 40, what="a boolean", stall=5, cap=100,
                   progress=lambda: int(clock.since() // 3), **fake(clock))
    assert got is True and 40 <= clock.since() < 41


def test_no_progress_fails_when_the_stall_budget_is_spent():
    clock = Clock()
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: clock.since() >= 40, what="a stuck thing", stall=5, cap=100,
                 progress=lambda: "always the same", **fake(clock))
    assert 5 <= clock.since() < 5.5                       # in time: not at the cap, not before the budget
    assert "nothing it watches moved for 5s" in str(err.value) and "a stuck thing" in str(err.value)
    assert err.value.elapsed == pytest.approx(clock.since(), abs=0.1) and err.value.changes == 0


def test_the_stall_budget_counts_from_the_last_change():
    clock = Clock()
    # moves for 20 s, then stops for good: fails 5 s after the last change, not 5 s after the start
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: min(int(clock.since() // 2), 10), what="x", until=lambda v: v > 10, stall=5, cap=100,
                 **fake(clock))
    assert 25 <= clock.since() < 25.5 and err.value.changes == 10 and err.value.last == 10


def test_a_moving_but_unfinished_wait_stops_at_the_cap():
    clock = Clock()
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: int(clock.since()), what="a busy loop", until=lambda v: v < 0, stall=5, cap=30,
                 **fake(clock))
    assert 30 <= clock.since() < 30.5
    assert "not done after 30s" in str(err.value) and "the overall cap: 30s" in str(err.value)


def test_the_old_timeout_is_a_stall_budget_of_at_least_min_stall():
    clock = Clock()
    with pytest.raises(WaitFailed):
        wait_for(lambda: False, 5, what="x", **fake(clock))
    assert waits.MIN_STALL <= clock.since() < waits.MIN_STALL + 0.5
    clock = Clock()
    with pytest.raises(WaitFailed):
        wait_for(lambda: False, 45, what="x", **fake(clock))
    assert 45 <= clock.since() < 45.5


def test_pytest_timeout_shortens_the_budget_so_the_failure_keeps_its_message(monkeypatch):
    monkeypatch.setattr(waits, "time_left_in_test", lambda: 100.0)
    clock = Clock()
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: int(clock.since()), what="x", until=lambda v: v < 0, stall=50, cap=1000, **fake(clock))
    assert 100 - waits.PYTEST_MARGIN <= clock.since() < 100 - waits.PYTEST_MARGIN + 0.5
    assert "pytest-timeout" in str(err.value)


def test_the_alarm_pytest_timeout_sets_is_read(monkeypatch):
    monkeypatch.undo()
    import signal
    before = signal.getitimer(signal.ITIMER_REAL)
    try:
        signal.setitimer(signal.ITIMER_REAL, 250.0)
        assert 249 < waits.time_left_in_test() <= 250
    finally:
        signal.setitimer(signal.ITIMER_REAL, *before)


# --- what a failure says ---------------------------------------------------------------------------

def test_the_message_says_what_was_awaited_and_holds_the_last_value():
    clock = Clock()
    n = iter(range(1000))
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: {"phase": "Running", "reason": "Started", "poll": min(next(n), 3)},
                 what="task t-1 to reach Succeeded", until=lambda s: s["phase"] == "Succeeded", stall=5,
                 **fake(clock))
    text = str(err.value)
    assert text.startswith("timed out waiting for task t-1 to reach Succeeded")
    assert "last value: {'phase': 'Running', 'reason': 'Started', 'poll': 3}" in text
    assert err.value.last == {"phase": "Running", "reason": "Started", "poll": 3}
    assert "3 change(s) seen" in text


def test_a_huge_last_value_is_clipped():
    clock = Clock()
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: ["x" * 100] * 1000, what="x", until=lambda v: False, stall=1, **fake(clock))
    assert len(str(err.value)) < waits.VALUE_CHARS + 500 and "chars)" in str(err.value)


def test_the_description_is_part_of_the_message():
    clock = Clock()
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: None, what="x", stall=1, describe=lambda: "the pod is Pending: Unschedulable",
                 **fake(clock))
    assert "--- what things looked like ---\nthe pod is Pending: Unschedulable" in str(err.value)


def test_a_failing_description_does_not_hide_the_timeout():
    clock = Clock()

    def broken() -> str:
        raise ApiException(status=500, reason="Internal Server Error")
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: None, what="the thing", stall=1, describe=broken, **fake(clock))
    assert "timed out waiting for the thing" in str(err.value)
    assert "describing failed: ApiException 500 Internal Server Error" in str(err.value)


def test_abort_fails_at_once_with_its_reason():
    clock = Clock()
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: {"phase": "Failed"}, what="task t to reach Succeeded", stall=60,
                 until=lambda s: s["phase"] == "Succeeded",
                 abort=lambda s: s["phase"] == "Failed" and "the task is Failed, for good", **fake(clock))
    assert clock.since() < 1
    assert str(err.value).startswith("gave up waiting for task t to reach Succeeded: the task is Failed, for good")


# --- errors while observing ------------------------------------------------------------------------

def test_transient_api_errors_are_values_that_are_not_done_yet():
    clock = Clock()
    answers = iter([ApiException(status=503, reason="busy"), ApiException(status=429, reason="slow down"),
                    ConnectionRefusedError("refused"), {"phase": "Succeeded"}])

    def observe():
        a = next(answers)
        if isinstance(a, BaseException):
            raise a
        return a
    assert wait_for(observe, what="x", stall=5, **fake(clock)) == {"phase": "Succeeded"}


def test_a_transient_error_that_persists_fails_the_wait_and_is_named():
    clock = Clock()

    def observe():
        raise ApiException(status=503, reason="Service Unavailable")
    with pytest.raises(WaitFailed) as err:
        wait_for(observe, what="x", stall=5, **fake(clock))
    assert "last value: <error: ApiException 503 Service Unavailable>" in str(err.value)


@pytest.mark.parametrize("error", [ApiException(status=404, reason="Not Found"), ValueError("a bug"),
                                   AssertionError("the operator exited")])
def test_other_errors_propagate_at_once(error):
    clock = Clock()

    def observe():
        raise error
    with pytest.raises(type(error)) as err:
        wait_for(observe, what="x", stall=5, **fake(clock))
    assert err.value is error and clock.since() < 1


def test_a_progress_probe_that_fails_shows_no_progress_and_fails_nothing():
    clock = Clock()

    def probe():
        raise ApiException(status=500)
    with pytest.raises(WaitFailed):
        wait_for(lambda: False, what="x", stall=5, progress=probe, **fake(clock))
    assert 5 <= clock.since() < 5.5


# --- async -----------------------------------------------------------------------------------------

async def test_async_wait_follows_progress_and_fails_when_still():
    clock = Clock(tick=0.05)        # time passes as the wait looks at the clock
    got = await wait_for_async(lambda: int(clock.since() // 2), what="x", until=lambda v: v >= 20, stall=5,
                               interval=0, clock=clock)
    assert got == 20 and clock.since() >= 40

    async def still():
        return "same"
    clock = Clock(tick=0.05)
    with pytest.raises(WaitFailed) as err:
        await wait_for_async(still, what="the writer to drain", until=lambda v: False, stall=5, interval=0,
                             clock=clock)
    assert 5 <= clock.since() < 6 and "last value: 'same'" in str(err.value)


# --- describe_task ---------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeCluster:
    def __init__(self, host: str, root: Path, logs: dict[str, str] | None = None) -> None:
        cfg = client.Configuration(host=host)
        cfg.retries = False
        self.api = client.ApiClient(cfg)
        self.kubeconfig = root / "kubeconfig"
        self.logs = logs or {}

    def pod_log(self, namespace: str, pod: str, container: str = "main") -> str:
        if pod not in self.logs:
            raise OSError(f"no log for {pod}")
        return self.logs[pod]

    def kubectl(self, *args: str, **kw):
        raise FileNotFoundError("kubectl")


def test_describe_task_survives_an_api_server_that_is_not_there(tmp_path):
    cluster = FakeCluster(f"http://127.0.0.1:{_closed_port()}", tmp_path)
    started = time.monotonic()
    text = describe_task(cluster, "ns1", "img-1", logs=[tmp_path / "missing.log"])
    assert time.monotonic() - started < 10
    assert text.startswith("task ns1/img-1: (could not read:")
    for section in ("its Job", "its pods", "recent events in ns1", "nodes"):
        assert f"{section}: (could not read:" in text
    assert "does not exist" in text


def test_describe_task_survives_anything_at_all(tmp_path):
    class Broken:
        api = object()      # every API class built on it fails

        def __getattr__(self, name):
            raise RuntimeError("no such cluster")
    text = describe_task(Broken(), "ns1", "t-1")
    assert "task ns1/t-1" in text and "could not read" in text


TASK = {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
        "metadata": {"name": "img-1", "namespace": "ns1", "resourceVersion": "41", "generation": 1},
        "spec": {"type": "image", "provider": "fake", "model": "fake-image", "priority": "critical"},
        "status": {"phase": "Queued", "reason": "JobCreated", "message": "waiting for a node", "attempts": 0,
                   "jobName": "img-1", "conditions": [{"type": "Accepted", "status": "True", "reason": "Valid",
                                                       "message": "spec accepted"}]}}
JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "img-1", "namespace": "ns1", "uid": "j1",
                                                             "resourceVersion": "43"},
       "spec": {"backoffLimit": 3, "activeDeadlineSeconds": 600, "template": {"spec": {"containers": [
           {"name": "main", "image": "gentask:dev"}]}}},
       "status": {"active": 1, "conditions": [{"type": "Suspended", "status": "False", "reason": "Resumed",
                                               "message": "resumed"}]}}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "img-1-abcde", "namespace": "ns1",
                                                       "resourceVersion": "44",
                                                       "creationTimestamp": "2026-01-01T00:00:00Z"},
       "spec": {"nodeName": "gentask-node", "containers": [{"name": "main", "image": "gentask:dev"}]},
       "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                  "containerStatuses": [{"name": "main", "image": "gentask:dev", "imageID": "", "ready": False,
                                         "restartCount": 2, "state": {"waiting": {
                                             "reason": "CreateContainerConfigError",
                                             "message": 'secret "gentask-credentials" not found'}}}]}}
EVENT = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "ns1"},
         "involvedObject": {"kind": "GenerationTask", "name": "img-1"}, "type": "Normal", "reason": "JobCreated",
         "message": "created Job img-1", "count": 1, "lastTimestamp": "2026-01-01T00:00:01Z"}


class StubAPI(BaseHTTPRequestHandler):
    """Answers the few reads describe_task makes; /api/v1/nodes fails with 500."""

    routes: dict[str, tuple[int, dict]] = {
        "/apis/gentask.io/v1alpha1/namespaces/ns1/generationtasks/img-1": (200, TASK),
        "/apis/batch/v1/namespaces/ns1/jobs": (200, {"kind": "JobList", "items": [JOB]}),
        "/api/v1/namespaces/ns1/pods": (200, {"kind": "PodList", "items": [POD]}),
        "/api/v1/namespaces/ns1/events": (200, {"kind": "EventList", "items": [EVENT]}),
        "/api/v1/nodes": (500, {"kind": "Status", "message": "etcd is slow", "code": 500}),
        "/apis/gentask.io/v1alpha1/namespaces/ns1/generationtasks": (200, {"kind": "GenerationTaskList", "items": [
            {**TASK, "metadata": {**TASK["metadata"], "name": f"q{i}"}} for i in range(6)] + [
            {**TASK, "metadata": {**TASK["metadata"], "name": "done"}, "status": {"phase": "Succeeded",
                                                                                 "reason": "Completed"}}]}),
    }
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        url = urlparse(self.path)
        self.seen.append(self.path)
        code, body = self.routes.get(url.path, (404, {"kind": "Status", "code": 404, "reason": "NotFound"}))
        selector = parse_qs(url.query).get("labelSelector")
        if url.path.endswith("/pods") and selector and selector != ["job-name=img-1"]:
            body = {"kind": "PodList", "items": []}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _process_node(tmp_path: Path) -> Path:
    (tmp_path / "node" / "pods" / "ns1_img-1-abcde_0123abcd").mkdir(parents=True)
    return tmp_path


def test_describe_task_says_what_the_task_its_job_pod_events_and_worker_log_look_like(stub_api, tmp_path):
    log = "".join(f'{{"msg": "line {i}"}}\n' for i in range(100)) + "artifact store unavailable: refused\n"
    cluster = FakeCluster(stub_api, _process_node(tmp_path), logs={"img-1-abcde": log})
    operator_log = tmp_path / "operator.log"
    operator_log.write_text("other task t-9 done\nqueued img-1: Job created\nresync done\n")
    text = describe_task(cluster, "ns1", "img-1", logs=[operator_log])
    assert "phase=Queued reason=JobCreated attempts=0 jobName=img-1" in text
    assert "message: waiting for a node" in text
    assert "condition Accepted=True reason=Valid" in text and "spec accepted" in text
    assert "Job img-1: active=1" in text and "backoffLimit=3" in text and "condition Suspended=False" in text
    assert "Pod img-1-abcde: phase=Pending node=gentask-node" in text
    assert ('container main: waiting CreateContainerConfigError: secret "gentask-credentials" not found '
            "restarts=2") in text
    assert "Normal JobCreated GenerationTask/img-1: created Job img-1" in text
    assert "| artifact store unavailable: refused" in text and "| {\"msg\": \"line 99\"}" in text
    assert "line 70\"}" not in text                                # only the last LOG_LINES lines
    assert "nodes: (could not read: ApiException 500" in text      # one failing read leaves the others
    assert "| queued img-1: Job created" in text


def test_a_failed_wait_about_a_task_carries_its_description(stub_api, tmp_path):
    cluster = FakeCluster(stub_api, _process_node(tmp_path), logs={"img-1-abcde": "starting\n"})
    clock = Clock()
    custom = client.CustomObjectsApi(cluster.api)
    with pytest.raises(WaitFailed) as err:
        wait_for(lambda: custom.get_namespaced_custom_object("gentask.io", "v1alpha1", "ns1", "generationtasks",
                                                             "img-1")["status"]["phase"],
                 what="task ns1/img-1 to reach Succeeded", until=lambda p: p == "Succeeded", stall=3,
                 **watching(cluster, "ns1", task="img-1"), **fake(clock))
    text = str(err.value)
    assert "last value: 'Queued'" in text
    assert "phase=Queued reason=JobCreated" in text and "CreateContainerConfigError" in text
    assert "| starting" in text
    assert any("fieldSelector=metadata.name%3Dimg-1" in p for p in StubAPI.seen)   # the progress probe looked


def test_the_task_progress_token_moves_with_the_pod_and_its_log(stub_api, tmp_path):
    root = _process_node(tmp_path)
    cluster = FakeCluster(stub_api, root)
    token = waits.task_progress(cluster, "ns1", "img-1")
    first = token()
    assert first == token()
    (root / "node" / "pods" / "ns1_img-1-abcde_0123abcd" / "main.log").write_text("a new line\n")
    assert token() != first
    moved = json.loads(json.dumps(POD))
    moved["metadata"]["resourceVersion"] = "45"
    StubAPI.routes = {**StubAPI.routes, "/api/v1/namespaces/ns1/pods": (200, {"kind": "PodList", "items": [moved]})}
    try:
        second = token()
        assert second[2] != first[2]
    finally:
        StubAPI.routes = {**StubAPI.routes, "/api/v1/namespaces/ns1/pods": (200, {"kind": "PodList",
                                                                                  "items": [POD]})}


def test_describe_namespace_groups_the_tasks_by_what_their_status_says(stub_api, tmp_path):
    cluster = FakeCluster(stub_api, _process_node(tmp_path), logs={"img-1-abcde": "hello\n"})
    text = describe_namespace(cluster, "ns1")
    assert "6 x phase=Queued reason=JobCreated: q0, q1, q2, q3 and 2 more - waiting for a node" in text
    assert "1 x phase=Succeeded reason=Completed: done" in text
    assert "Job img-1: active=1" in text and "Pod img-1-abcde: phase=Pending" in text and "| hello" in text
    assert "nodes: (could not read: ApiException 500" in text
