"""The pool executor: `gentask operator` with GENTASK_EXECUTOR=pool and `gentask worker pool`
processes (real processes, as a Deployment's pods would run them) against the local cluster.

One operator for the module watches p-<module>-* (out of the session operator's sight, t-*); each
test makes its own namespace there and starts its own pool processes on it. The pool's Leases
live in the module's lease namespace, which the operator reads too.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from tests.integration.operator.conftest import (
    EVERY_TYPE,
    Tasks,
    artifact_bytes,
    log_tail,
    make_quota,
    quota_status,
    start_operator,
    stop_operator,
    worker_namespace,
)
from tests.support.waits import file_progress, wait_for

MODULE = uuid.uuid4().hex[:6]
LEASE_SECONDS = "6"


@pytest.fixture(scope="module")
def lease_ns(cluster):
    name = worker_namespace(cluster, f"p-{MODULE}-leases")
    yield name
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def pool_operator(cluster, lease_ns, tmp_path_factory):
    op = start_operator(cluster, tmp_path_factory.mktemp("pool-operator") / "operator.log",
                        GENTASK_WATCH_NAMESPACES=f"p-{MODULE}-*", GENTASK_EXECUTOR="pool",
                        GENTASK_POOL_LEASE_NAMESPACE=lease_ns, GENTASK_RESYNC_SECONDS="2")
    yield op
    stop_operator(op)


@pytest.fixture
def p_ns(cluster):
    name = worker_namespace(cluster, f"p-{MODULE}")
    yield name
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


class PoolProcess:
    """One `python -m gentask worker pool`, its identity (POD_NAME) and its log."""

    def __init__(self, env: dict, log: Path, pod: str) -> None:
        self.log, self.pod = log, pod
        self.proc = subprocess.Popen([sys.executable, "-m", "gentask", "worker", "pool"], env=env,
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def said(self, message: str) -> list[dict]:
        return [line for line in self.lines() if line.get("message", "").startswith(message)]

    def wait_started(self) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the pool exited ({self.proc.returncode}): {log_tail(self.log)}")
            return bool(self.said("worker pool started"))
        wait_for(started, 60, what=f"pool {self.pod} to start", progress=file_progress(self.log),
                 describe=lambda: log_tail(self.log))

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError(f"pool {self.pod} did not stop within {timeout}s: {log_tail(self.log)}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def pools(pool_operator, lease_ns, tmp_path):
    """start(namespace, concurrency=4, **env) -> a running PoolProcess; all stopped after the test."""
    started: list[PoolProcess] = []

    def start(namespace: str, concurrency: int = 4, wait: bool = True, env_from: dict | None = None,
              **extra: str) -> PoolProcess:
        pod = f"pool-{len(started)}-{uuid.uuid4().hex[:4]}"
        env = {**(env_from or pool_operator.env), "GENTASK_WATCH_NAMESPACES": namespace,
               "GENTASK_POOL_CONCURRENCY": str(concurrency), "GENTASK_POOL_LEASE_NAMESPACE": lease_ns,
               "GENTASK_POOL_LEASE_SECONDS": LEASE_SECONDS, "GENTASK_POOL_DRAIN_SECONDS": "5",
               "GENTASK_METRICS_PORT": "0", "POD_NAME": pod, **extra}
        pool = PoolProcess(env, tmp_path / f"{pod}.log", pod)
        started.append(pool)
        if wait:
            pool.wait_started()
        return pool
    yield start
    for pool in started:
        if pool.proc.poll() is None:
            pool.terminate()


def tasks_of(cluster, ns: str, operator, *pools: PoolProcess) -> Tasks:
    return Tasks(cluster, ns, operator.log, *(p.log for p in pools))


def claims(*pools: PoolProcess) -> Counter:
    """How often each task was claimed, over the pools' logs (the worker logs every claim it wins)."""
    return Counter(line["task"].split("/", 1)[1] for p in pools for line in p.said("task claimed"))


@EVERY_TYPE
def test_every_type_succeeds_with_artifacts_and_no_job(cluster, pool_operator, pools, p_ns, type_, model, params,
                                                       check):
    pool = pools(p_ns)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type=type_, model=model, prompt="a red fox in the snow", params=params)
    status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=120)
    assert status["phase"] == "Succeeded", status
    assert status["reason"] == "Completed" and status["attempts"] == 1
    assert status["workerPod"] == f"{pool.pod}/0" and "jobName" not in status
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Succeeded"]["status"] == "True" and conds["Scheduled"]["message"] == "queued for the worker pool"
    assert not client.BatchV1Api(cluster.api).list_namespaced_job(p_ns).items       # no Job at all
    assert claims(pool) == {name: 1}
    result = status["result"]
    if type_ == "text":
        assert result["text"] and len(result["text"].split()) <= 12
        return
    ref = result["images"][0] if type_ == "image" else result["video"]
    data = artifact_bytes(cluster, ref["artifact"])
    assert hashlib.sha256(data).hexdigest() == ref["sha256"] and len(data) == ref["sizeBytes"]
    assert check(data)


def test_invalid_spec_fails_without_running(cluster, pool_operator, pools, p_ns):
    pool = pools(p_ns)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="image", model="doubao-seedream-3-0-t2i-250415", provider="volcengine",
                        prompt="x", params={"size": "999x999"})
    status = tasks.wait_phase(name, "Failed", timeout=30)
    assert status["reason"] == "InvalidSpec" and "999x999" in status["message"]
    assert "workerPod" not in status and not claims(pool)


def test_retryable_provider_errors_then_success_in_one_attempt(cluster, pool_operator, pools, p_ns):
    pool = pools(p_ns)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="text", model="fake-text", prompt="hi [fail-first:2:rate_limited]", retries=3)
    status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=90)
    assert status["phase"] == "Succeeded" and status["attempts"] == 1
    assert claims(pool) == {name: 1}


def test_permanent_failure_fails_at_once(cluster, pool_operator, pools, p_ns):
    pool = pools(p_ns)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="image", model="fake-image", prompt="x [fail:content_rejected]", retries=3)
    status = tasks.wait_phase(name, "Failed", timeout=60)
    assert status["reason"] == "ContentRejected" and status["attempts"] == 1
    assert claims(pool) == {name: 1}


def test_an_unreachable_artifact_store_spends_every_attempt_then_fails(cluster, pool_operator, pools, p_ns):
    """EXIT_RETRY (trouble around the provider): queued again after a backoff, a new attempt each
    time, up to spec.retries more; then Failed as a Job whose backoffLimit ran out."""
    pool = pools(p_ns, MONGO_URL="mongodb://127.0.0.1:9/nowhere?serverSelectionTimeoutMS=300")
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="image", model="fake-image", prompt="nowhere to keep it", params={"size": "64x64"},
                        retries=1)
    status = tasks.wait_phase(name, "Failed", timeout=90)
    assert status["reason"] == "BackoffLimitExceeded" and status["attempts"] == 2, status
    assert "artifact store unavailable" in status["message"]
    assert claims(pool) == {name: 2}


def test_cancel_while_queued(cluster, pool_operator, pools, p_ns):
    tasks = tasks_of(cluster, p_ns, pool_operator)
    name = tasks.create(type="text", model="fake-text", prompt="never runs")     # no pool yet: it waits
    status = tasks.wait_phase(name, "Queued", timeout=30)
    assert status["reason"] == "Validated" and status["message"] == "queued for the worker pool"
    tasks.patch_spec(name, cancel=True)
    assert tasks.wait_phase(name, "Cancelled", timeout=30)["reason"] == "Cancelled"
    pool = pools(p_ns)
    after = tasks.create(type="text", model="fake-text", prompt="runs")
    assert tasks.wait_phase(after, "Succeeded", timeout=60)
    assert claims(pool) == {after: 1} and tasks.status(name)["phase"] == "Cancelled"


def test_cancel_while_running_stops_the_run_and_frees_its_slot(cluster, pool_operator, pools, p_ns):
    pool = pools(p_ns, concurrency=1)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="video", model="fake-video", prompt="long [latency:5m]", params={"duration": 1})
    running = tasks.wait_status(name, lambda s: s.get("providerTaskID"), 60, what="to submit its vendor job")
    assert running["phase"] == "Running" and running["workerPod"] == f"{pool.pod}/0"
    tasks.patch_spec(name, cancel=True)
    status = tasks.wait_phase(name, "Cancelled", timeout=30)
    assert running["providerTaskID"] in status["message"]
    wait_for(lambda: pool.said("stopping the task's run"), 30, until=bool, what="the pool to stop the run",
             progress=file_progress(pool.log), describe=lambda: log_tail(pool.log))
    after = tasks.create(type="text", model="fake-text", prompt="next")     # the one slot is free again
    assert tasks.wait_phase(after, "Succeeded", timeout=60)
    assert tasks.status(name)["phase"] == "Cancelled"        # the stopped run wrote nothing after


def test_delete_while_running_stops_the_run(cluster, pool_operator, pools, p_ns):
    pool = pools(p_ns, concurrency=1)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="text", model="fake-text", prompt="long [latency:5m]")
    tasks.wait_phase(name, "Running", timeout=60)
    tasks.delete(name)
    wait_for(lambda: pool.said("stopping the task's run"), 30, until=bool, what="the pool to stop the run",
             progress=file_progress(pool.log), describe=lambda: log_tail(pool.log))
    assert "deleted" in pool.said("stopping the task's run")[0]["message"]
    after = tasks.create(type="text", model="fake-text", prompt="next")
    assert tasks.wait_phase(after, "Succeeded", timeout=60)


def test_critical_before_default_before_low_with_one_slot(cluster, pool_operator, pools, p_ns):
    tasks = tasks_of(cluster, p_ns, pool_operator)
    names = {}
    for priority in ("low", "default", "critical"):      # queued while no pool runs, worst first
        names[priority] = tasks.create(type="text", model="fake-text", prompt=f"{priority} [latency:300ms]",
                                       priority=priority)
        tasks.wait_phase(names[priority], "Queued", timeout=30)
    pool = pools(p_ns, concurrency=1)
    for name in names.values():
        assert tasks.wait_phase(name, "Succeeded", timeout=60)
    order = [line["task"].split("/", 1)[1] for line in pool.said("task claimed")]
    assert order == [names["critical"], names["default"], names["low"]], order


def test_two_pools_run_sixty_tasks_each_exactly_once(cluster, pool_operator, pools, p_ns):
    a, b = pools(p_ns, concurrency=4), pools(p_ns, concurrency=4)
    tasks = tasks_of(cluster, p_ns, pool_operator, a, b)
    names = [tasks.create(type="text", model="fake-text", prompt=f"task {i} [latency:200ms]") for i in range(60)]

    def phases() -> Counter:
        items = tasks.api.list_namespaced_custom_object("gentask.io", "v1alpha1", p_ns, "generationtasks")["items"]
        return Counter((t.get("status") or {}).get("phase") for t in items)
    wait_for(phases, 120, until=lambda c: c.get("Succeeded", 0) == 60, what="60 tasks to succeed",
             progress=lambda: str(phases()), describe=lambda: log_tail(a.log) + "\n" + log_tail(b.log))
    for name in names:
        status = tasks.status(name)
        assert status["phase"] == "Succeeded" and status["attempts"] == 1, status
        assert status["workerPod"].split("/")[0] in (a.pod, b.pod)
    counted = claims(a, b)
    assert set(counted) == set(names) and set(counted.values()) == {1}, counted
    succeeded = Counter(line["task"] for p in (a, b) for line in p.said("task succeeded"))
    assert set(succeeded) == set(names) and set(succeeded.values()) == {1}     # one provider call each
    assert claims(a) and claims(b), "both pools claimed tasks"


def test_a_pool_killed_mid_task_its_task_is_queued_again_and_succeeds(cluster, pool_operator, pools, p_ns,
                                                                       lease_ns):
    doomed = pools(p_ns, concurrency=1)
    tasks = tasks_of(cluster, p_ns, pool_operator, doomed)
    name = tasks.create(type="text", model="fake-text", prompt="slow [latency:8s]")
    running = tasks.wait_phase(name, "Running", timeout=60)
    assert running["workerPod"] == f"{doomed.pod}/0" and running["attempts"] == 1
    doomed.kill()
    heir = pools(p_ns, concurrency=1)
    tasks.logs += (heir.log,)
    status = tasks.wait_status(name, lambda s: s.get("phase") == "Succeeded", 90, what="to succeed on the heir")
    assert status["workerPod"] == f"{heir.pod}/0"
    assert status["attempts"] == 1        # the lost attempt carried on, as for a lost Job pod
    assert claims(heir) == {name: 1}
    requeued = [c for c in status["conditions"] if c["type"] == "Running"]
    assert requeued and requeued[0]["status"] == "False"
    said = [json.loads(line) for line in pool_operator.log.read_text().splitlines()
            if "queued again a task whose pool worker is gone" in line]
    assert any(line["task"] == f"{p_ns}/{name}" and line["pod"] == f"{doomed.pod}/0" for line in said), said
    # the dead pool's Lease stays until someone deletes it; the live one's is there
    leases = {lease.metadata.name for lease in client.CoordinationV1Api(cluster.api).list_namespaced_lease(
        lease_ns).items}
    assert heir.pod in leases


def test_a_pool_started_before_the_operator_idles_then_serves_and_stops_cleanly(cluster, lease_ns, pools, tmp_path):
    ns = worker_namespace(cluster, "q")      # out of the module operator's sight
    try:
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MONGO_URL": cluster.mongo_url, "LOG_LEVEL": "info"}
        pool = pools(ns, env_from=env)
        tasks = Tasks(cluster, ns, pool.log)
        name = tasks.create(type="text", model="fake-text", prompt="wait for the operator")
        time.sleep(2)     # a negative check: with no operator, nothing may move it (nothing to wait for)
        assert tasks.status(name).get("phase") in (None, "Pending") and not claims(pool)
        coord = client.CoordinationV1Api(cluster.api)
        assert coord.read_namespaced_lease(pool.pod, lease_ns).spec.holder_identity.startswith(pool.pod)
        op = start_operator(cluster, tmp_path / "late-operator.log", GENTASK_WATCH_NAMESPACES=ns,
                            GENTASK_EXECUTOR="pool", GENTASK_POOL_LEASE_NAMESPACE=lease_ns)
        try:
            tasks.logs += (op.log,)
            assert tasks.wait_phase(name, "Succeeded", timeout=60)["workerPod"] == f"{pool.pod}/0"
        finally:
            stop_operator(op)
        started = time.monotonic()
        assert pool.terminate() == 0
        assert time.monotonic() - started < 15
        assert pool.said("worker pool stopped")
        assert pool.pod not in {lease.metadata.name for lease in coord.list_namespaced_lease(lease_ns).items}
    finally:
        client.CoreV1Api(cluster.api).delete_namespace(ns, propagation_policy="Background")


def test_an_idle_pool_with_no_tasks_exits_cleanly_on_sigterm(cluster, pools, p_ns):
    pool = pools(p_ns)
    assert pool.terminate(timeout=20) == 0
    assert pool.said("worker pool stopped") and not claims(pool)


def test_a_task_over_its_timeout_fails_with_deadline_exceeded(cluster, pool_operator, pools, p_ns):
    pool = pools(p_ns)
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    name = tasks.create(type="video", model="fake-video", prompt="slow [latency:5m]", timeoutSeconds=10,
                        params={"duration": 1})
    status = tasks.wait_phase(name, "Failed", timeout=60)
    assert status["reason"] == "DeadlineExceeded" and status["attempts"] == 1


def test_a_pool_restarted_under_its_name_queues_again_what_it_left_running(cluster, pool_operator, pools, p_ns):
    """A pod restarted in place keeps its name, so its Lease looks alive: the new process itself
    queues again what the old one left Running (the Lease here outlives the test, so the operator
    cannot be the one)."""
    first = pools(p_ns, concurrency=1, GENTASK_POOL_LEASE_SECONDS="600")
    tasks = tasks_of(cluster, p_ns, pool_operator, first)
    name = tasks.create(type="text", model="fake-text", prompt="slow [latency:6s]")
    assert tasks.wait_phase(name, "Running", timeout=60)["workerPod"] == f"{first.pod}/0"
    first.kill()
    again = pools(p_ns, concurrency=1, GENTASK_POOL_LEASE_SECONDS="600", POD_NAME=first.pod)
    tasks.logs += (again.log,)
    status = tasks.wait_phase(name, "Succeeded", timeout=60)
    assert status["attempts"] == 1 and status["workerPod"] == f"{first.pod}/0"
    assert claims(again) == {name: 1}


def test_sigterm_hands_a_long_task_back_to_the_queue_for_another_pool(cluster, pool_operator, pools, p_ns):
    leaving = pools(p_ns, concurrency=1, GENTASK_POOL_DRAIN_SECONDS="1")
    tasks = tasks_of(cluster, p_ns, pool_operator, leaving)
    name = tasks.create(type="text", model="fake-text", prompt="slow [latency:8s]")
    tasks.wait_phase(name, "Running", timeout=60)
    assert leaving.terminate(timeout=30) == 0
    status = tasks.status(name)
    assert status["phase"] == "Queued" and status["reason"] == "PodLost" and status["attempts"] == 0, status
    assert leaving.said("task handed back to the queue")
    heir = pools(p_ns, concurrency=1)
    tasks.logs += (heir.log,)
    status = tasks.wait_phase(name, "Succeeded", timeout=60)
    assert status["attempts"] == 1 and status["workerPod"] == f"{heir.pod}/0"       # the same attempt, carried on


@pytest.mark.timeout(240)
def test_a_task_waiting_for_a_quota_is_queued_and_no_pool_claims_it_before_room_frees(cluster, pool_operator,
                                                                                     pools, p_ns):
    make_quota(cluster, p_ns, "one-at-once", concurrent=1)
    wait_for(lambda: quota_status(cluster, p_ns, "one-at-once"), 60, until=lambda s: s.get("concurrent") == "0/1",
             what="the operator to count the new quota (its status 0/1)")
    pool = pools(p_ns, concurrency=4)        # free slots: only the quota holds the tasks back
    tasks = tasks_of(cluster, p_ns, pool_operator, pool)
    names = [tasks.create(f"q{i}", type="text", model="fake-text", prompt=f"task {i} [latency:1500ms]")
             for i in range(3)]
    waiting = tasks.wait_status(names[1], lambda s: s.get("reason") == "QuotaWait", 60, "to wait for the quota")
    assert waiting["phase"] == "Queued" and "quota one-at-once" in waiting["message"], waiting
    most, seen = 0, set()

    def sample() -> Counter:
        nonlocal most
        items = tasks.api.list_namespaced_custom_object("gentask.io", "v1alpha1", p_ns, "generationtasks")["items"]
        phases = Counter((t.get("status") or {}).get("phase") for t in items)
        most = max(most, phases.get("Running", 0))
        seen.update((t.get("status") or {}).get("reason") for t in items)
        return phases
    wait_for(sample, 120, interval=0.2, until=lambda c: c.get("Succeeded", 0) == 3, what="3 tasks to succeed",
             progress=lambda: str(sample()), describe=lambda: log_tail(pool.log))
    assert most == 1, f"{most} tasks ran at once under a concurrency quota of 1"
    assert "QuotaWait" in seen
    counted = claims(pool)
    assert set(counted) == set(names) and set(counted.values()) == {1}, counted
