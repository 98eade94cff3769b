"""The worker pool's pure parts: the queue's order, identities, Leases, what a requeue writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gentask.domain.reasons import Phase
from gentask.domain.task import GenerationTask
from gentask.worker.pool import (
    TaskQueue,
    claimable,
    exhausted,
    exhausted_status,
    identity,
    in_scope,
    lease_alive,
    lease_of,
    namespaces_of,
    requeue_status,
    slot_pod,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def drain(queue: TaskQueue) -> list[tuple[str, str]]:
    out = []
    while (key := queue.pop()) is not None:
        out.append(key)
    return out


def test_critical_before_default_before_low_then_oldest_first():
    q = TaskQueue()
    q.put(("ns", "low-old"), "low", T0)
    q.put(("ns", "default-new"), "default", T0 + timedelta(seconds=5))
    q.put(("ns", "critical-new"), "critical", T0 + timedelta(seconds=9))
    q.put(("ns", "default-old"), "default", T0 + timedelta(seconds=1))
    q.put(("ns", "critical-old"), "critical", T0 + timedelta(seconds=2))
    assert drain(q) == [("ns", "critical-old"), ("ns", "critical-new"), ("ns", "default-old"),
                        ("ns", "default-new"), ("ns", "low-old")]


def test_same_second_keeps_the_order_tasks_were_seen_in():
    q = TaskQueue()
    for name in ("c", "a", "b"):
        q.put(("ns", name), "default", T0)
    assert [k[1] for k in drain(q)] == ["c", "a", "b"]


def test_unknown_priority_counts_as_default_and_no_time_goes_last():
    q = TaskQueue()
    q.put(("ns", "untimed"), "default", None)
    q.put(("ns", "odd"), "urgent", T0)
    q.put(("ns", "low"), "low", T0)
    assert [k[1] for k in drain(q)] == ["odd", "untimed", "low"]


def test_put_twice_keeps_the_place_and_discard_takes_it_out():
    q = TaskQueue()
    q.put(("ns", "a"), "low", T0)
    q.put(("ns", "b"), "low", T0 + timedelta(seconds=1))
    q.put(("ns", "a"), "low", T0 + timedelta(seconds=9))      # seen again: same place
    assert len(q) == 2 and q.keys() == [("ns", "a"), ("ns", "b")]
    q.discard(("ns", "a"))
    q.discard(("ns", "never-there"))
    assert ("ns", "a") not in q and drain(q) == [("ns", "b")]
    assert q.pop() is None and len(q) == 0


def test_a_discarded_task_queued_again_gets_a_new_place():
    q = TaskQueue()
    q.put(("ns", "a"), "default", T0)
    q.put(("ns", "b"), "default", T0)
    q.discard(("ns", "a"))
    q.put(("ns", "a"), "default", T0)        # queued again later (a retry): after b
    assert drain(q) == [("ns", "b"), ("ns", "a")]


def test_identity_is_the_pod_name_else_host_and_pid():
    assert identity({"POD_NAME": "gentask-pool-7d9f-x2"}) == "gentask-pool-7d9f-x2"
    assert identity({"POD_NAME": "My_Host.Example"}) == "my-host-example"
    fallback = identity({})
    assert fallback and fallback.split("-")[-1].isdigit()       # two processes on one host differ
    assert slot_pod("p-1", 3) == "p-1/3" and lease_of("p-1/3") == "p-1"
    assert lease_of("img-4k2x9q-abcde") is None and lease_of(None) is None     # a Job's pod: no Lease


def test_a_lease_lives_for_the_duration_its_holder_gave():
    lease = {"spec": {"renewTime": "2026-01-02T03:04:05.000000Z", "leaseDurationSeconds": 30}}
    assert lease_alive(lease, T0 + timedelta(seconds=30))
    assert not lease_alive(lease, T0 + timedelta(seconds=31))
    assert not lease_alive(None, T0) and not lease_alive({"spec": {}}, T0)
    assert lease_alive({"spec": {"acquireTime": "2026-01-02T03:04:05Z", "leaseDurationSeconds": 5}}, T0)


def task(phase: str, reason: str, attempts: int, retries: int = 3) -> GenerationTask:
    return GenerationTask.model_validate({
        "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1, "resourceVersion": "7"},
        "spec": {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "x", "userID": "u",
                 "retries": retries},
        "status": {"phase": phase, "reason": reason, "attempts": attempts, "workerPod": "p-1/0",
                   "conditions": [{"type": "Running", "status": "True", "reason": "Started",
                                   "lastTransitionTime": "2026-01-02T03:04:05Z"}]}})


def test_a_lost_attempt_is_carried_on_by_the_next_claim():
    status = requeue_status(task("Running", "Started", 2), "PodLost", "gone", attempt_ended=False)
    assert status.phase is Phase.QUEUED and status.reason == "PodLost"
    assert status.attempts == 1             # the next claim adds one: attempt 2 again
    running = next(c for c in status.conditions if c.type == "Running")
    assert running.status == "False" and running.reason == "PodLost"


def test_an_ended_attempt_counts():
    status = requeue_status(task("Running", "Retrying", 2), "Retrying", "store down", attempt_ended=True)
    assert status.phase is Phase.QUEUED and status.attempts == 2       # the next claim is attempt 3


def test_every_attempt_spent_fails_as_a_job_backoff_limit():
    assert not exhausted(task("Running", "Retrying", 3, retries=3))
    spent = task("Running", "Retrying", 4, retries=3)
    assert exhausted(spent)
    status = exhausted_status(spent)
    assert status.phase is Phase.FAILED and status.reason == "BackoffLimitExceeded"
    assert "all 4 attempt(s) failed" in (status.message or "")


def test_what_to_watch():
    assert namespaces_of([]) == [None] and namespaces_of(["a", "b", "a"]) == ["a", "b"]
    assert namespaces_of(["a", "t-*"]) == [None]
    assert in_scope("t-1", ["t-*"]) and not in_scope("x", ["t-*"]) and in_scope("x", [])


def test_two_processes_order_a_same_second_burst_differently_but_keep_priority_and_time():
    names = [f"t-{i}" for i in range(20)]
    orders = []
    for salt in ("pool-a", "pool-b"):
        q = TaskQueue(salt=salt)
        q.put(("ns", "low"), "low", T0 - timedelta(seconds=60))
        q.put(("ns", "later"), "default", T0 + timedelta(seconds=1))
        for name in names:
            q.put(("ns", name), "default", T0)
        q.put(("ns", "critical"), "critical", T0 + timedelta(seconds=9))
        order = [k[1] for k in drain(q)]
        assert order[0] == "critical" and order[-2:] == ["later", "low"]
        assert sorted(order[1:-2]) == sorted(names)
        orders.append(order[1:-2])
    assert orders[0] != orders[1]       # the burst's heads differ: fewer claims collide
    assert orders[0][0] != orders[1][0]


def test_only_a_queued_task_given_to_the_pool_is_claimable():
    assert claimable(task("Queued", "Validated", 0))
    assert not claimable(task("Queued", "QuotaWait", 0))       # waits for a quota's room: the operator's turn
    assert not claimable(task("Pending", "Created", 0))
    assert not claimable(task("Running", "Started", 1))
