"""The inline executor's writes: a quick task gets one status write (its outcome with the claim's
fields), a slow one is marked Running once GENTASK_INLINE_CLAIM_SECONDS have passed, a task cancelled
while it waits in the executor's queue never runs, and an outcome whose task changed meanwhile is
written at the new version. Each test runs its own operator on its own namespace (prefix i-)."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client, watch

from gentask.domain import GROUP, PLURAL, VERSION
from tests.integration.operator.conftest import Tasks, start_operator, stop_operator, worker_namespace
from tests.support.waits import wait_for


@pytest.fixture
def i_ns(cluster):
    name = worker_namespace(cluster, "i")
    yield name
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


class Changes:
    """Every change of the namespace's tasks as a watch delivers it: (name, type, phase, reason, rv)."""

    def __init__(self, cluster, ns: str) -> None:
        self.api = client.CustomObjectsApi(cluster.api)
        self.ns = ns
        self.seen: list[tuple[str, str, str | None, str | None, int]] = []
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rv = self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["metadata"]["resourceVersion"]
        self.ready.set()
        w = watch.Watch()
        while not self.stopping.is_set():
            for event in w.stream(self.api.list_namespaced_custom_object, GROUP, VERSION, self.ns, PLURAL,
                                  resource_version=rv, timeout_seconds=2):
                obj = event["object"]
                status = obj.get("status") or {}
                rv = obj["metadata"]["resourceVersion"]
                self.seen.append((obj["metadata"]["name"], event["type"], status.get("phase"), status.get("reason"),
                                  int(rv)))

    def __enter__(self) -> Changes:
        self.thread.start()
        assert self.ready.wait(30), "the watch of the namespace's tasks did not start"
        return self

    def __exit__(self, *_exc) -> None:
        self.stopping.set()
        self.thread.join(10)

    def of(self, name: str) -> list[tuple[str, str | None, str | None]]:
        return [(kind, phase, reason) for n, kind, phase, reason, _ in self.seen if n == name]


def _events_of(cluster, ns: str, name: str) -> list[client.CoreV1Event]:
    return [e for e in client.CoreV1Api(cluster.api).list_namespaced_event(ns).items if e.involved_object.name == name]


def test_a_quick_task_gets_one_status_write_with_the_claims_fields(cluster, i_ns, tmp_path):
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=i_ns, GENTASK_EXECUTOR="inline")
    tasks = Tasks(cluster, i_ns, op.log)
    try:
        with Changes(cluster, i_ns) as changes:
            name = tasks.create(type="text", model="fake-text", prompt="quick [latency:0s]")
            status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=60)
            wait_for(lambda: changes.of(name), 30, until=lambda c: ("MODIFIED", "Succeeded", "Completed") in c,
                     what="the watch to show the outcome", **tasks.watching(name))
        assert changes.of(name) == [("ADDED", None, None), ("MODIFIED", "Succeeded", "Completed")], changes.of(name)
        assert status["phase"] == "Succeeded" and status["result"]["text"]
        assert status["attempts"] == 1 and status["workerPod"].startswith("inline-") and status["startTime"]
        assert status["completionTime"] >= status["startTime"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions == {"Accepted": "True", "Scheduled": "True", "Running": "False", "Succeeded": "True"}
        events = wait_for(lambda: _events_of(cluster, i_ns, name), 30, until=lambda e: len(e) >= 1,
                          what="the outcome's Event", **tasks.watching(name))
        assert [(e.reason, e.type) for e in events] == [("Completed", "Normal")]
    finally:
        stop_operator(op)


def test_a_slow_task_is_marked_running_once_the_claim_window_passes(cluster, i_ns, tmp_path):
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=i_ns, GENTASK_EXECUTOR="inline",
                        GENTASK_INLINE_CLAIM_SECONDS="1")
    tasks = Tasks(cluster, i_ns, op.log)
    try:
        with Changes(cluster, i_ns) as changes:
            name = tasks.create(type="text", model="fake-text", prompt="slow [latency:4s]")
            running = tasks.wait_phase(name, "Running", timeout=60)
            assert running["reason"] == "Started" and running["attempts"] == 1
            assert running["workerPod"].startswith("inline-")
            status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=60)
            wait_for(lambda: changes.of(name), 30, until=lambda c: ("MODIFIED", "Succeeded", "Completed") in c,
                     what="the watch to show the outcome", **tasks.watching(name))
        assert changes.of(name) == [("ADDED", None, None), ("MODIFIED", "Running", "Started"),
                                    ("MODIFIED", "Succeeded", "Completed")], changes.of(name)
        assert status["phase"] == "Succeeded" and status["startTime"] == running["startTime"]
    finally:
        stop_operator(op)


def test_a_task_cancelled_while_it_waits_in_the_queue_never_runs(cluster, i_ns, tmp_path):
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=i_ns, GENTASK_EXECUTOR="inline",
                        GENTASK_INLINE_CONCURRENCY="1")
    tasks = Tasks(cluster, i_ns, op.log)
    try:
        first = tasks.create(type="text", model="fake-text", prompt="hold the only slot [latency:6s]")
        tasks.wait_phase(first, "Running", timeout=60)          # the one slot is taken (claimed after 1 s)
        waiting = tasks.create(type="text", model="fake-text", prompt="never run me [latency:0s]")
        time.sleep(0.5)                                          # seen by the operator: queued behind the first
        assert tasks.status(waiting).get("phase") in (None, "Pending"), tasks.status(waiting)
        tasks.patch_spec(waiting, cancel=True)
        cancelled = tasks.wait_phase(waiting, "Cancelled", "Succeeded", "Failed", timeout=60)
        assert cancelled["phase"] == "Cancelled", cancelled
        tasks.wait_phase(first, "Succeeded", timeout=60)
        # the slot is free now: the cancelled task would have run by the time the first's outcome is in
        later = tasks.status(waiting)
        assert later["phase"] == "Cancelled" and "result" not in later and "workerPod" not in later, later
        # had it run, its outcome would have been dropped (the task was cancelled), and the log would say so
        dropped = [line for line in op.log.read_text().splitlines() if "outcome is dropped" in line]
        assert not [line for line in dropped if waiting in line], dropped
    finally:
        stop_operator(op)


def test_a_task_deleted_while_it_waits_in_the_queue_never_runs(cluster, i_ns, tmp_path):
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=i_ns, GENTASK_EXECUTOR="inline",
                        GENTASK_INLINE_CONCURRENCY="1")
    tasks = Tasks(cluster, i_ns, op.log)
    try:
        first = tasks.create(type="text", model="fake-text", prompt="hold the only slot [latency:6s]")
        tasks.wait_phase(first, "Running", timeout=60)
        doomed = tasks.create(type="text", model="fake-text", prompt="never run me [latency:0s]")
        time.sleep(0.5)                                          # seen by the operator: queued behind the first
        tasks.delete(doomed)
        tasks.wait_phase(first, "Succeeded", timeout=60)
        again = tasks.create(doomed, type="text", model="fake-text", prompt="a new task of that name [latency:0s]")
        status = tasks.wait_phase(again, "Succeeded", "Failed", timeout=60)    # the new one of the name runs
        assert status["phase"] == "Succeeded", status
        # the deleted one never ran: its run's outcome would have met a 404, which the log says
        gone = [line for line in op.log.read_text().splitlines() if "is gone" in line]
        assert not gone, gone
    finally:
        stop_operator(op)


def test_an_outcome_whose_task_changed_during_the_run_is_written_at_the_new_version(cluster, i_ns, tmp_path):
    """The outcome's write is guarded by the version the run started from; a label added meanwhile makes it
    fail with 409, and the worker reads the task and writes the outcome again (no second vendor call)."""
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=i_ns, GENTASK_EXECUTOR="inline",
                        GENTASK_INLINE_CLAIM_SECONDS="30")
    tasks = Tasks(cluster, i_ns, op.log)
    try:
        name = tasks.create(type="text", model="fake-text", prompt="changed under me [latency:3s]")
        time.sleep(1.0)                          # the run is under way: no claim is written for 30 s
        assert tasks.status(name).get("phase") in (None, "Pending"), tasks.status(name)
        tasks.api.patch_namespaced_custom_object(GROUP, VERSION, i_ns, PLURAL, name,
                                                 {"metadata": {"labels": {"team": "blue"}}})
        status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=60)
        assert status["phase"] == "Succeeded" and status["attempts"] == 1 and status["result"]["text"], status
        assert tasks.get(name)["metadata"]["labels"]["team"] == "blue"
        # one run: no failed attempt (a 409 the worker did not handle would have been one, and a second run)
        failed = [line for line in op.log.read_text().splitlines() if '"level": "error"' in line]
        assert not failed, failed
    finally:
        stop_operator(op)
