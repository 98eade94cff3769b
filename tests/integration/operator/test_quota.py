"""GenerationQuotas on the local cluster: a concurrency limit queues tasks and starts them by priority,
a budget stops the task that would exceed it (and not the one before), an operator killed mid-run
counts the same after its restart, `kubectl get generationquota` shows used/limit.

Each test has a namespace of its own (q-…, out of the session operator's sight), an operator serving
it alone and a database of its own (FerretDB scans a whole collection on every query)."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid

import pytest
from kubernetes import client

from gentask.kube.names import job_name
from tests.integration.operator.conftest import (
    QUOTAS,
    Tasks,
    make_quota,
    patch_quota,
    quota_status,
    start_operator,
    stop_operator,
    worker_namespace,
)
from tests.support.waits import describe_namespace, wait_for

GROUP, VERSION = "gentask.io", "v1alpha1"
TERMINAL = ("Succeeded", "Failed", "Cancelled")


def admitted(task: dict) -> bool:
    """Given to an executor: Queued (not waiting for a quota's room) or Running."""
    status = task.get("status") or {}
    return status.get("phase") == "Running" or (status.get("phase") == "Queued" and status.get("reason") != "QuotaWait")


@pytest.fixture
def q_ns(cluster):
    """A namespace with a database of its own (its name, as the Secret's MONGO_URL says)."""
    prefix = f"q-{uuid.uuid4().hex[:8]}"
    url = cluster.mongo_url.rsplit("/", 1)[0] + "/" + prefix.replace("-", "_")
    name = worker_namespace(cluster, prefix, mongo_url=url)
    yield name, url
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


def _all(tasks: Tasks) -> list[dict]:
    return tasks.api.list_namespaced_custom_object(GROUP, VERSION, tasks.ns, "generationtasks")["items"]


class Sampler:
    """Lists the namespace's Jobs and then its tasks every 0.2 s: the most admitted at once, when each was
    first admitted, and any task that waited for room (Queued, QuotaWait) while a Job of its existed (a
    Job listed before the task is not younger than what the task's listing shows)."""

    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks
        self.most = 0
        self.first_admitted: dict[str, float] = {}
        self.waiting_with_job: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = {j.metadata.name for j in client.BatchV1Api(self.tasks.cluster.api).list_namespaced_job(
                    self.tasks.ns).items}
                items = _all(self.tasks)
            except Exception:  # noqa: BLE001 - a busy API server: the next sample
                continue
            now = time.monotonic()
            self.most = max(self.most, sum(admitted(t) for t in items))
            for t in items:
                status = t.get("status") or {}
                if admitted(t) or (status.get("phase") in TERMINAL and status.get("reason") != "QuotaExceeded"):
                    self.first_admitted.setdefault(t["metadata"]["name"], now)
                if status.get("reason") == "QuotaWait" and job_name(t["metadata"]["name"]) in jobs:
                    self.waiting_with_job.add(t["metadata"]["name"])
            self.samples += 1
            self._stop.wait(0.2)


@pytest.mark.timeout(300)
def test_a_concurrency_quota_of_2_runs_6_tasks_2_at_a_time_critical_first(cluster, q_ns, tmp_path):
    ns, url = q_ns
    make_quota(cluster, ns, "two-at-once", concurrent=0)        # closed: every task waits first
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=url)
    tasks = Tasks(cluster, ns, op.log)
    try:
        order = ["low", "default", "critical", "low", "default", "critical"]
        names = [tasks.create(f"{p}-{i}", type="text", model="fake-text", prompt=f"task {i} [latency:2s]",
                              params={"maxTokens": 5}, priority=p) for i, p in enumerate(order)]
        for name in names:
            status = tasks.wait_status(name, lambda s: s.get("reason") == "QuotaWait", 60, "to wait for the quota")
            assert status["phase"] == "Queued"          # in the queue, not yet given to an executor
            assert "quota two-at-once" in status["message"] and "0 concurrent" in status["message"]
            conditions = {c["type"]: c for c in status["conditions"]}
            assert conditions["Scheduled"]["status"] == "False" and conditions["Scheduled"]["reason"] == "QuotaWait"
            assert conditions["Accepted"]["status"] == "True"
        assert not client.BatchV1Api(cluster.api).list_namespaced_job(ns).items, "a waiting task got a Job"
        wait_for(lambda: quota_status(cluster, ns, "two-at-once").get("used", {}).get("waiting"), 30,
                 until=lambda n: n == 6, what="the quota's status to show 6 waiting")
        with Sampler(tasks) as sampler:
            patch_quota(cluster, ns, "two-at-once", concurrent=2)
            wait_for(lambda: [(t["metadata"]["name"], (t.get("status") or {}).get("phase")) for t in _all(tasks)],
                     120, interval=1, until=lambda pairs: all(p in TERMINAL for _, p in pairs),
                     what="all 6 tasks to finish", describe=lambda: describe_namespace(cluster, ns, logs=[op.log]))
        assert {tasks.status(n)["phase"] for n in names} == {"Succeeded"}
        assert sampler.samples > 10
        assert sampler.most <= 2, f"{sampler.most} tasks were admitted at once under a limit of 2"
        assert sampler.most == 2
        assert not sampler.waiting_with_job, f"tasks waiting for room had a Job: {sampler.waiting_with_job}"
        first = sampler.first_admitted
        by = {p: [first[n] for n in names if n.startswith(p)] for p in ("critical", "default", "low")}
        assert max(by["critical"]) <= min(by["default"]) and max(by["default"]) <= min(by["low"]), first
        shown = cluster.kubectl("get", "generationquota", "-n", ns)
        assert shown.returncode == 0, shown.stderr
        header, row = shown.stdout.splitlines()[:2]
        assert header.split()[:5] == ["NAME", "USER", "CONCURRENT", "WAITING", "TODAY"], shown.stdout
        wait_for(lambda: cluster.kubectl("get", "gq", "two-at-once", "-n", ns).stdout, 30,
                 until=lambda out: " 0/2 " in out and " 6/- " in out, what="kubectl get gq to show 0/2 and 6 today")
    finally:
        stop_operator(op)


PRICES = '{"fake/fake-image": {"perImage": "1.00"}}'     # a fake image costs 1 XTS: the arithmetic shows


@pytest.mark.timeout(300)
def test_a_budget_stops_the_task_that_would_exceed_it_and_not_the_one_before(cluster, q_ns, tmp_path):
    ns, url = q_ns
    make_quota(cluster, ns, "team-budget", costPerMonth={"amount": "2.5", "currency": "XTS"})
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=url,
                        GENTASK_PRICES=PRICES)
    tasks = Tasks(cluster, ns, op.log)
    try:
        image = {"type": "image", "model": "fake-image", "params": {"size": "64x64"}}
        first = tasks.create("first", prompt="one", **image)
        assert tasks.wait_phase(first, *TERMINAL)["cost"]["amount"] == "1"      # spent: 1 of 2.5
        # a burst: the second is admitted (1 + 1 <= 2.5) and reserved at once, so the third, created
        # while the second still runs, is refused (1 + 1 + 1 > 2.5) before any Job or vendor call
        second = tasks.create("second", prompt="two [latency:2s]", **image)
        third = tasks.create("third", prompt="three", **image)
        refused = wait_for(lambda: tasks.status(third), 60, until=lambda s: s.get("phase") in TERMINAL,
                           what="the third task to end", **tasks.watching(third))
        assert refused["phase"] == "Failed" and refused["reason"] == "QuotaExceeded", refused
        assert refused["message"].startswith("quota team-budget: 0.50 XTS of 2.50 XTS left this month"), refused
        assert "this task would cost about 1.00 XTS" in refused["message"]
        assert "attempts" not in refused and "cost" not in refused and "jobName" not in refused
        assert tasks.wait_phase(second, *TERMINAL)["phase"] == "Succeeded"
        jobs = {j.metadata.name for j in client.BatchV1Api(cluster.api).list_namespaced_job(ns).items}
        assert third not in jobs and {first, second} <= jobs
        events = client.CoreV1Api(cluster.api).list_namespaced_event(ns, field_selector=f"involvedObject.name={third}")
        assert any(e.reason == "QuotaExceeded" and "team-budget" in e.message for e in events.items)
        wait_for(lambda: quota_status(cluster, ns, "team-budget").get("month"), 30,
                 until=lambda m: m == "2.00/2.50 XTS", what="the quota's status to show 2 of 2.5 XTS spent")
    finally:
        stop_operator(op)


@pytest.mark.timeout(300)
def test_tasks_per_day_of_one_user_stop_her_third_task_and_not_another_user(cluster, q_ns, tmp_path):
    ns, url = q_ns
    make_quota(cluster, ns, "alice-daily", user="alice", tasksPerDay=2)
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=url)
    tasks = Tasks(cluster, ns, op.log)
    text = {"type": "text", "model": "fake-text", "params": {"maxTokens": 5}}
    try:
        ran = [tasks.create(f"alice-{i}", prompt=f"a{i}", userID="alice", **text) for i in range(2)]
        # the third is the one made after two were admitted: made a moment after them, it could be
        # admitted first (the operator takes events as they come), and then one of them is "the third"
        for name in ran:
            wait_for(lambda n=name: tasks.status(n).get("phase"), 90, until=lambda p: p not in (None, "Pending"),
                     what=f"{name} to be admitted", **tasks.watching(name))
        third = tasks.create("alice-2", prompt="a2", userID="alice", **text)
        bob = tasks.create("bob-0", prompt="b0", userID="bob", **text)
        for name in [*ran, bob]:
            assert tasks.wait_phase(name, *TERMINAL)["phase"] == "Succeeded"
        refused = wait_for(lambda: tasks.status(third), 60, until=lambda s: s.get("phase") in TERMINAL,
                           what="alice's third task to end", **tasks.watching(third))
        assert refused["reason"] == "QuotaExceeded", refused
        assert refused["message"].startswith("quota alice-daily: 0 of 2 tasks left today (UTC)"), refused
        wait_for(lambda: quota_status(cluster, ns, "alice-daily").get("today"), 30, until=lambda t: t == "2/2",
                 what="the quota's status to show 2 of 2 today")
    finally:
        stop_operator(op)


@pytest.mark.timeout(420)
def test_an_operator_killed_mid_run_resumes_with_the_same_counts(cluster, q_ns, tmp_path):
    ns, url = q_ns
    make_quota(cluster, ns, "two", concurrent=2, tasksPerDay=100,
               costPerMonth={"amount": "50", "currency": "XTS"})
    extra = {"GENTASK_WATCH_NAMESPACES": ns, "MONGO_URL": url, "GENTASK_PRICES": PRICES}
    op = start_operator(cluster, tmp_path / "op1.log", **extra)
    tasks = Tasks(cluster, ns, tmp_path / "op1.log", tmp_path / "op2.log")
    image = {"type": "image", "model": "fake-image", "params": {"size": "64x64"}}
    names = [tasks.create(f"k{i}", prompt=f"slow {i} [latency:4s]", **image) for i in range(5)]
    op2 = None
    try:
        wait_for(lambda: quota_status(cluster, ns, "two"), 60, what="2 running and 3 waiting",
                 until=lambda s: s.get("concurrent") == "2/2" and (s.get("used") or {}).get("waiting") == 3)
        os.killpg(op.proc.pid, signal.SIGKILL)
        op.proc.wait()
        killed_at = time.time()
        with Sampler(tasks) as sampler:
            op2 = start_operator(cluster, tmp_path / "op2.log", **extra)
            since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(killed_at))

            def snapshot() -> tuple[int, dict, int]:
                # the tasks that ended, read before and after the quota's status: equal, nothing ended between
                ended = sum(tasks.status(n).get("phase") in TERMINAL for n in names)
                status = quota_status(cluster, ns, "two")
                return ended, status, sum(tasks.status(n).get("phase") in TERMINAL for n in names)

            def agrees(snap: tuple[int, dict, int]) -> bool:
                ended, status, ended_after = snap
                used = status.get("used") or {}
                return (status.get("observedAt", "") > since and ended == ended_after and ended < 5
                        and used.get("concurrent", 0) + used.get("waiting", 0) + ended == 5
                        and used.get("concurrent") == min(2, 5 - ended))

            # the restarted operator counts the same tasks, admitted or waiting, while some are left: a task
            # that ends between two reads, or the moment between one ending and the next being let in, is
            # read again; a count that stays wrong never agrees
            wait_for(snapshot, 90, interval=0.3, until=agrees, what="the restarted operator's count to agree "
                     "with the tasks (ended, quota status, ended again)",
                     describe=lambda: describe_namespace(cluster, ns, logs=tasks.logs))
            wait_for(lambda: [tasks.status(n).get("phase") for n in names], 180, interval=1,
                     until=lambda ps: all(p in TERMINAL for p in ps), what="all 5 tasks to finish",
                     describe=lambda: describe_namespace(cluster, ns, logs=tasks.logs))
        assert sampler.most <= 2, f"{sampler.most} admitted at once after the restart"
        assert not sampler.waiting_with_job, f"after the restart tasks waiting for room had a Job: " \
                                             f"{sampler.waiting_with_job}"
        assert {tasks.status(n)["phase"] for n in names} == {"Succeeded"}
        # while the last one runs the month shows its estimate (1) beside the others' cost (4): the same
        # 5.00, so the wait is for nothing running
        final = wait_for(lambda: quota_status(cluster, ns, "two"), 30, what="the final counts",
                         until=lambda s: s.get("concurrent") == "0/2")
        assert final["today"] == "5/100" and final["month"] == "5.00/50.00 XTS", final
    finally:
        if op.proc.poll() is None:
            stop_operator(op)
        if op2 is not None:
            stop_operator(op2)


@pytest.mark.timeout(300)
def test_rest_answers_429_with_the_quota_and_a_retry_after_and_creates_nothing(cluster, q_ns, tmp_path):
    from tests.integration.api.conftest import launch

    ns, url = q_ns
    make_quota(cluster, ns, "alice-one", user="alice", concurrent=1)
    make_quota(cluster, ns, "bob-daily", user="bob", tasksPerDay=1)
    make_quota(cluster, ns, "team-budget", costPerMonth={"amount": "1.5", "currency": "XTS"})
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=url,
                        GENTASK_PRICES=PRICES)
    api = launch(cluster, ns, mongo_url=url, prices=PRICES)
    tasks = Tasks(cluster, ns, op.log)
    alice, bob, root = api.client("alice"), api.client("bob"), api.client("root")
    text = {"provider": "fake", "model": "fake-text", "max_tokens": 5, "retries": 0}
    try:
        first = alice.post("/api/v1/ai/text/task", json={"prompt": "slow [latency:3s]", **text})
        assert first.status_code == 200, first.text
        over = alice.post("/api/v1/ai/text/task", json={"prompt": "one too many", **text})
        assert over.status_code == 429, over.text
        assert "quota alice-one" in over.json()["message"] and "limit of 1 concurrent" in over.json()["message"]
        assert over.headers["Retry-After"] == "5"
        assert bob.post("/api/v1/ai/text/task", json={"prompt": "bob's first", **text}).status_code == 200

        def bob_refused():
            r = bob.post("/api/v1/ai/text/task", json={"prompt": "bob's second", **text})
            return r.status_code, r.json().get("message", ""), r.headers.get("Retry-After")
        code, message, retry = wait_for(bob_refused, 30, until=lambda v: v[0] == 429,
                                        what="bob's second task to be refused (the mirror's figures are cached 10 s)")
        assert message.startswith("quota bob-daily: 0 of 1 tasks left today (UTC)"), message
        assert 0 < int(retry) <= 86401
        # the namespace's budget: an image costs 1 XTS of 1.5; the second would exceed it
        image = {"provider": "fake", "model": "fake-image", "size": "64x64", "retries": 0}
        made = root.post("/api/v1/ai/image/task", json={"prompt": "one", "user_id": "carol", **image})
        assert made.status_code == 200, made.text
        tasks.wait_phase(made.json()["data"]["task_id"], "Succeeded")

        def carol_refused():
            r = root.post("/api/v1/ai/image/task", json={"prompt": "two", "user_id": "carol", **image})
            return r.status_code, r.json().get("message", ""), r.headers.get("Retry-After")
        code, message, retry = wait_for(carol_refused, 30, until=lambda v: v[0] == 429,
                                        what="the image that would exceed the budget to be refused")
        # left: 1.5 - 1 (the image) - the few micro-XTS the text tasks of alice and bob cost (fake-text's tokens)
        assert re.match(r"quota team-budget: 0\.49\d* XTS of 1\.50 XTS left this month .*this task would cost "
                        r"about 1\.00 XTS", message), message
        assert int(retry) > 0
        owners = sorted(t["spec"]["userID"] for t in _all(tasks))
        assert owners == ["alice", "bob", "carol"], owners       # nothing was created for the refused ones
    finally:
        api.stop()
        stop_operator(op)


@pytest.mark.timeout(180)
def test_a_task_waiting_for_a_deleted_quota_starts(cluster, q_ns, tmp_path):
    ns, url = q_ns
    make_quota(cluster, ns, "closed", concurrent=0)
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=url)
    tasks = Tasks(cluster, ns, op.log)
    try:
        name = tasks.create("held", type="text", model="fake-text", prompt="held", params={"maxTokens": 5})
        assert tasks.wait_status(name, lambda s: s.get("reason") == "QuotaWait", 60)["phase"] == "Queued"
        shown = cluster.kubectl("get", "gq", "-n", ns, "-o", "wide")
        print(shown.stdout)
        client.CustomObjectsApi(cluster.api).delete_namespaced_custom_object(GROUP, VERSION, ns, QUOTAS, "closed")
        assert tasks.wait_phase(name, *TERMINAL, timeout=60)["phase"] == "Succeeded"
    finally:
        stop_operator(op)


@pytest.mark.timeout(240)
def test_the_inline_executor_runs_a_quota_waiting_task_only_when_room_frees(cluster, q_ns, tmp_path):
    ns, url = q_ns
    make_quota(cluster, ns, "one", concurrent=1)
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=ns, MONGO_URL=url,
                        GENTASK_EXECUTOR="inline")
    tasks = Tasks(cluster, ns, op.log)
    try:
        names = [tasks.create(f"i{i}", type="text", model="fake-text", prompt=f"task {i} [latency:1500ms]",
                              params={"maxTokens": 5}) for i in range(3)]
        with Sampler(tasks) as sampler:
            waiting = tasks.wait_status(names[2], lambda s: s.get("reason") == "QuotaWait", 60, "to wait for the quota")
            assert waiting["phase"] == "Queued", waiting
            wait_for(lambda: [tasks.status(n).get("phase") for n in names], 120, interval=0.5,
                     until=lambda ps: all(p in TERMINAL for p in ps), what="all 3 tasks to finish",
                     describe=lambda: describe_namespace(cluster, ns, logs=[op.log]))
        assert {tasks.status(n)["phase"] for n in names} == {"Succeeded"}
        assert sampler.samples > 5 and sampler.most == 1, f"{sampler.most} admitted at once under a limit of 1"
    finally:
        stop_operator(op)
