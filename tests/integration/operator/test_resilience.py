"""The operator under stress: killed mid-burst, MongoDB gone for 30 s, a worker pod started twice,
a saturated node, the inline executor. Each test runs its own operator on its own namespace
(prefix r-), out of the session operator's sight (it watches t-*)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pymongo
import pytest
from kubernetes import client

from devcluster import DevCluster
from tests.integration.operator.conftest import Tasks, start_operator, stop_operator, worker_namespace
from tests.support.waits import describe_namespace, wait_for

TERMINAL = ("Succeeded", "Failed", "Cancelled")


@pytest.fixture
def r_ns(cluster):
    name = worker_namespace(cluster, "r")
    yield name
    client.CoreV1Api(cluster.api).delete_namespace(name, propagation_policy="Background")


def _own_db(cluster, ns: str) -> tuple[str, str]:
    """A MongoDB URL and database of this test's own: FerretDB v1.24 on PostgreSQL sends a query's
    filter as containment tests that no index serves, so PostgreSQL scans the whole collection and
    FerretDB decodes every match; a test that counts on the mirror keeps its collection small."""
    name = ns.replace("-", "_")
    return cluster.mongo_url.rsplit("/", 1)[0] + f"/{name}", name


def _all(tasks: Tasks) -> list[dict]:
    return tasks.api.list_namespaced_custom_object("gentask.io", "v1alpha1", tasks.ns, "generationtasks")["items"]


def _mirror_lag(db, items: list[dict]) -> list[str]:
    """The tasks whose MongoDB record is missing or differs from the resource (phase, resourceVersion)."""
    records = {r["_id"]: r for r in db.tasks.find({"namespace": items[0]["metadata"]["namespace"]})}
    return [t["metadata"]["name"] for t in items
            if not (t["metadata"]["uid"] in records
                    and records[t["metadata"]["uid"]]["phase"] == (t.get("status") or {}).get("phase")
                    and records[t["metadata"]["uid"]]["resourceVersion"] == int(t["metadata"]["resourceVersion"]))]


def _phases(items: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in items:
        phase = (t.get("status") or {}).get("phase") or "<none>"
        counts[phase] = counts.get(phase, 0) + 1
    return counts


@pytest.mark.timeout(900)
def test_operator_killed_mid_burst_of_200(cluster, r_ns, tmp_path):
    """SIGKILL while 200 tasks arrive; after a restart every task ends, one Job each, MongoDB agrees."""
    url, dbname = _own_db(cluster, r_ns)
    extra = {"GENTASK_WATCH_NAMESPACES": r_ns, "GENTASK_WORKER_CPU_REQUEST": "1",     # 8 at a time on the node
             "MONGO_URL": url}
    op = start_operator(cluster, tmp_path / "op1.log", **extra)
    tasks = Tasks(cluster, r_ns, tmp_path / "op1.log", tmp_path / "op2.log")
    names = [f"b{i:03d}" for i in range(200)]
    created = []

    def make(name):
        tasks.create(name, type="text", model="fake-text", prompt=f"burst {name}", params={"maxTokens": 5},
                     priority=("critical", "default", "low")[int(name[1:]) % 3])
        created.append(name)
    killed = threading.Event()

    def killer():
        wait_for(lambda: len(created), 120, interval=0.05, until=lambda n: n >= 100, what="100 tasks created")
        os.killpg(op.proc.pid, signal.SIGKILL)
        op.proc.wait()
        killed.set()
    threading.Thread(target=killer, daemon=True).start()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, names))
    assert killed.wait(30), "the operator was not killed mid-burst"
    op2 = start_operator(cluster, tmp_path / "op2.log", **extra)
    try:
        # 8 at a time: the phase counts move every few seconds; still for 120 s is stuck
        wait_for(lambda: _phases(_all(tasks)), 120, interval=2, cap=850,
                 until=lambda phases: set(phases) <= set(TERMINAL), what="all 200 tasks to finish",
                 describe=lambda: describe_namespace(cluster, r_ns, pod_logs=False, logs=tasks.logs))
        items = _all(tasks)
        assert len(items) == 200
        assert {t["status"]["phase"] for t in items} == {"Succeeded"}
        jobs = client.BatchV1Api(cluster.api).list_namespaced_job(r_ns).items
        assert sorted(j.metadata.name for j in jobs) == sorted(names)        # exactly one Job per task
        assert all(t["status"]["attempts"] == 1 for t in items)
        db = pymongo.MongoClient(url)[dbname]
        wait_for(lambda: _mirror_lag(db, _all(tasks)), 120, interval=2, until=lambda lag: not lag,
                 what="MongoDB to equal the resources (last value: the tasks whose record differs)",
                 describe=lambda: describe_namespace(cluster, r_ns, pod_logs=False, logs=tasks.logs))
    finally:
        stop_operator(op2)


def test_mongodb_down_for_30s_loses_nothing(cluster, r_ns, tmp_path):
    dev = DevCluster(cluster.kubeconfig.parent)
    url, dbname = _own_db(cluster, r_ns)
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=r_ns, MONGO_URL=url)
    tasks = Tasks(cluster, r_ns, op.log)
    db = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000)[dbname]
    try:
        dev.stop_component("ferretdb")
        started = time.monotonic()
        try:
            names = [tasks.create(type="text", model="fake-text", prompt=f"during the outage {i}") for i in range(10)]
            wait_for(lambda: {n: tasks.status(n).get("phase") for n in names}, 90, interval=1,
                     until=lambda phases: set(phases.values()) == {"Succeeded"},
                     what="tasks to keep running while MongoDB is down", **tasks.watching())
            assert op.metric("gentask_mirror_pending") >= 1
            time.sleep(max(0.0, 30 - (time.monotonic() - started)))
        finally:
            dev.start_component("ferretdb")
        wait_for(lambda: _mirror_lag(db, _all(tasks)), 60, interval=1, until=lambda lag: not lag,
                 what="the mirror to catch up (last value: the tasks whose record differs)", **tasks.watching())
        wait_for(lambda: op.metric("gentask_mirror_pending"), 30, until=lambda n: n == 0,
                 what="the mirror queue to drain", **tasks.watching())
    finally:
        stop_operator(op)


def test_a_pod_started_twice_for_one_attempt_pays_once(cluster, r_ns, tmp_path):
    """A real vendor client (Ark, Seedance video) against its local server: the worker is killed
    while the vendor job runs and started again for the same attempt; one submission, one artifact set."""
    from devcluster.vendors import LocalVendors
    from gentask.config import load_settings
    from gentask.storage import ArtifactStore, connect

    tasks = Tasks(cluster, r_ns, tmp_path / "w1.log")     # no operator watches r-*: this test plays the Job's part
    name = tasks.create(type="video", provider="volcengine", model="doubao-seedance-1-0-pro-250528",
                        prompt="waves at dusk", params={"duration": 5, "aspectRatio": "16:9"})
    with LocalVendors(job_steps=100000) as vendors:
        s = vendors.settings()
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MONGO_URL": cluster.mongo_url,
               "POD_NAME": f"{name}-abcde", "ARK_BASE_URL": s.ark_base_url,
               "ARK_API_KEY": s.ark_api_key.get_secret_value(), "LOG_LEVEL": "info"}
        cmd = [sys.executable, "-m", "gentask", "worker", "run", f"{r_ns}/{name}"]
        first = subprocess.Popen(cmd, env=env, stdout=open(tmp_path / "w1.log", "wb"), stderr=subprocess.STDOUT)
        submitted = tasks.wait_status(name, lambda s: s.get("providerTaskID"), 30,
                                      what="to get its vendor job id")["providerTaskID"]
        time.sleep(0.5)
        first.kill()
        first.wait()
        assert vendors.ark.count("POST", "contents/generations/tasks") == 1
        vendors.ark.job_steps = 1                                   # the job finishes on the next polls
        second = subprocess.run(cmd, env=env, stdout=open(tmp_path / "w2.log", "wb"), stderr=subprocess.STDOUT,
                                timeout=120)
        assert second.returncode == 0, (tmp_path / "w2.log").read_text()[-2000:]
        assert vendors.ark.count("POST", "contents/generations/tasks") == 1     # resumed, not submitted again
    status = tasks.status(name)
    assert status["phase"] == "Succeeded" and status["attempts"] == 1 and status["providerTaskID"] == submitted
    # and is charged once: one vendor attempt, the resumed job, at the price table's token price
    (charged,) = status["cost"]["attempts"]
    assert charged["vendorTaskID"] == submitted and charged["outcome"] == "Succeeded"
    assert charged["usage"]["videoTokens"] == 1920 * 1088 * 24 * 5 // 1024 and status["cost"]["currency"] == "CNY"
    uid = tasks.get(name)["metadata"]["uid"]
    refs = ArtifactStore(connect(load_settings(mongo_url=cluster.mongo_url))).list_for_task(uid)
    assert len(refs) == 1 and refs[0].name == status["result"]["video"]["artifact"]
    # and a third start of the same attempt (the pod's process restarted once more) stores nothing new
    third = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    assert third.returncode == 0
    assert len(ArtifactStore(connect(load_settings(mongo_url=cluster.mongo_url))).list_for_task(uid)) == 1


def test_saturated_node_runs_critical_before_default_before_low(cluster, r_ns, tmp_path):
    core = client.CoreV1Api(cluster.api)
    # A taint of our own holds every pod (cordoning would not do: the node controller then adds and
    # later removes a taint of its own, and the second wake-up races the scheduler's backoffs).
    hold = {"spec": {"taints": [{"key": "gentask.io/hold", "value": "test", "effect": "NoSchedule"}]}}
    core.patch_node("gentask-node", hold)
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=r_ns,
                        GENTASK_WORKER_CPU_REQUEST="8")                         # one task at a time
    tasks = Tasks(cluster, r_ns, op.log)
    try:
        names = {p: tasks.create(f"{p}-task", type="text", model="fake-text", prompt=p, priority=p)
                 for p in ("low", "default", "critical")}
        for name in names.values():
            tasks.wait_phase(name, "Queued", timeout=30)
        wait_for(lambda: len(core.list_namespaced_pod(r_ns).items), 30, until=lambda n: n == 3,
                 what="three pending pods", **tasks.watching())
        time.sleep(11)   # past the scheduler's longest backoff: the queue is then ordered by priority alone
        core.patch_node("gentask-node", {"spec": {"taints": None}})
        for name in names.values():
            tasks.wait_phase(name, "Succeeded", timeout=90)
        # The API server keeps these times in whole seconds, and a fake task takes about one, so two
        # may share a second: the order shows as one slot handed on, each task starting no earlier
        # than the one before it finished.
        times = {p: (tasks.status(n)["startTime"], tasks.status(n)["completionTime"]) for p, n in names.items()}
        assert times["critical"][1] <= times["default"][0] and times["default"][1] <= times["low"][0], times
    finally:
        core.patch_node("gentask-node", {"spec": {"taints": None}})
        stop_operator(op)


def test_inline_executor_runs_tasks_in_the_operator(cluster, r_ns, tmp_path):
    op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=r_ns, GENTASK_EXECUTOR="inline",
                        GENTASK_INLINE_CONCURRENCY="2")
    tasks = Tasks(cluster, r_ns, op.log)
    try:
        names = [tasks.create(type="image", model="fake-image", prompt=f"inline {i}", params={"size": "64x64"})
                 for i in range(4)]
        for name in names:
            status = tasks.wait_phase(name, "Succeeded", "Failed", timeout=60)
            assert status["phase"] == "Succeeded" and status["result"]["images"][0]["sha256"]
        assert not client.BatchV1Api(cluster.api).list_namespaced_job(r_ns).items      # no Job at all
    finally:
        stop_operator(op)


def test_metrics_and_probes(cluster, operator, tasks):
    name = tasks.create(type="text", model="fake-text", prompt="count me")
    tasks.wait_phase(name, "Succeeded", timeout=60)
    wait_for(lambda: operator.metric("gentask_tasks", phase="Succeeded", type="text", provider="fake"), 20,
             until=lambda n: n >= 1, what="the tasks gauge", **tasks.watching(name))
    text = operator.metrics()
    for family in ("gentask_task_duration_seconds_bucket", "gentask_task_queue_wait_seconds_bucket",
                   "gentask_mirror_lag_seconds", "gentask_operator_api_writes_total"):
        assert family in text
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/readyz") as r:
        assert r.status == 200


def test_a_task_whose_first_look_failed_is_started_by_the_resync(cluster, r_ns, tmp_path):
    """Kopf never retries an event handler: a task whose first reconcile failed (here the API server
    refuses its Queued write) waits for no new event; the resync must start it."""
    adm = client.AdmissionregistrationV1Api(cluster.api)
    policy = f"test-refuse-status-{r_ns}"
    adm.create_validating_admission_policy({"metadata": {"name": policy}, "spec": {
        "failurePolicy": "Fail",
        "matchConstraints": {"resourceRules": [{"apiGroups": ["gentask.io"], "apiVersions": ["*"],
                                                "operations": ["UPDATE"], "resources": ["generationtasks/status"]}]},
        "matchConditions": [{"name": "this-namespace", "expression": f"request.namespace == '{r_ns}'"}],
        "validations": [{"expression": "false", "message": "status writes are refused for this test"}]}})
    adm.create_validating_admission_policy_binding({"metadata": {"name": policy}, "spec": {
        "policyName": policy, "validationActions": ["Deny"]}})
    op = None
    try:
        tasks = Tasks(cluster, r_ns)
        name = tasks.create(type="text", model="fake-text", prompt="start me late")

        def refused() -> bool:
            try:
                tasks.api.patch_namespaced_custom_object_status("gentask.io", "v1alpha1", r_ns, "generationtasks",
                                                                name, {"status": {"message": "probe"}})
            except client.ApiException as exc:
                return exc.status in (403, 422) and "refused for this test" in (exc.body or "")
            return False
        wait_for(refused, 30, until=bool, what="the test's admission policy to refuse status writes")
        op = start_operator(cluster, tmp_path / "op.log", GENTASK_WATCH_NAMESPACES=r_ns, GENTASK_RESYNC_SECONDS="3")
        tasks = Tasks(cluster, r_ns, op.log)
        wait_for(lambda: (tmp_path / "op.log").read_text(errors="replace").count("reconcile failed"), 60,
                 until=lambda n: n >= 1, what="the operator's first look at the task to fail")
        assert tasks.status(name).get("phase") in (None, "Pending")
    finally:
        adm.delete_validating_admission_policy_binding(policy)
        adm.delete_validating_admission_policy(policy)
    try:
        status = tasks.wait_phase(name, "Succeeded", timeout=60)      # nothing changed the task: the resync did it
        assert status["attempts"] == 1
    finally:
        if op is not None:
            stop_operator(op)


def test_finished_tasks_leave_the_watch_but_keep_their_ttl_and_history(cluster, r_ns, tmp_path):
    """The operator watches unfinished tasks only. A finished task still expires after its TTL
    (armed when it finished, and again by the audit of an operator started later), and one deleted
    with kubectl while no operator watched gets its record marked deleted by the next audit."""
    url, dbname = _own_db(cluster, r_ns)
    db = pymongo.MongoClient(cluster.mongo_url)[dbname]
    env = {"GENTASK_WATCH_NAMESPACES": r_ns, "MONGO_URL": url, "GENTASK_AUDIT_SECONDS": "3"}
    op = start_operator(cluster, tmp_path / "op.log", **env)
    tasks = Tasks(cluster, r_ns, op.log)
    try:
        short = tasks.create(type="text", model="fake-text", prompt="expire soon", ttlSecondsAfterFinished=3)
        later = tasks.create(type="text", model="fake-text", prompt="expire later", ttlSecondsAfterFinished=25)
        kept = tasks.create(type="text", model="fake-text", prompt="deleted by hand")
        for name in (short, later, kept):
            tasks.wait_phase(name, "Succeeded", timeout=120)
        uids = {name: tasks.get(name)["metadata"]["uid"] for name in (short, later, kept)}
        wait_for(lambda: tasks.status(short).get("phase"), 60, until=lambda p: p == "<deleted>",
                 what=f"task {short} to be deleted 3 s after it finished", **tasks.watching(short))
        record = wait_for(lambda: db.tasks.find_one({"_id": uids[short]}), 30, until=lambda r: r and r.get("deleted"),
                          what="the expired task's record to be marked deleted", **tasks.watching(short))
        assert record["phase"] == "Succeeded"
    finally:
        stop_operator(op)
    tasks.delete(kept)                  # no operator runs: nobody sees this deletion happen
    assert tasks.status(later).get("phase") == "Succeeded"
    op = start_operator(cluster, tmp_path / "op2.log", **env)
    tasks = Tasks(cluster, r_ns, op.log)
    try:
        record = wait_for(lambda: db.tasks.find_one({"_id": uids[kept]}), 60, until=lambda r: r and r.get("deleted"),
                          what="the audit to mark the record of the task deleted by hand", **tasks.watching())
        assert record["phase"] == "Succeeded"
        # the new operator never saw `later` finish: its audit armed the TTL
        wait_for(lambda: tasks.status(later).get("phase"), 90, until=lambda p: p == "<deleted>",
                 what=f"task {later} to expire under the restarted operator", **tasks.watching(later))
        wait_for(lambda: db.tasks.find_one({"_id": uids[later]}), 30, until=lambda r: r and r.get("deleted"),
                 what="the record of the task expired by the restarted operator to be marked deleted")
        log = (tmp_path / "op2.log").read_text(errors="replace")
        assert "reconcile failed" not in log
    finally:
        stop_operator(op)


def test_a_record_lost_after_the_start_is_mirrored_again_by_the_second_audit(cluster, r_ns, tmp_path):
    """The first audit runs before the watches list: a task that finishes in between is in neither
    (the watch shows unfinished tasks only), and its record stays behind. So the audit runs again
    30 s after the start, not only every GENTASK_AUDIT_SECONDS (600 s here). The test makes a
    record the watch will not bring back by taking a finished task's record (and its timeline)
    out of MongoDB after the restarted operator's first audit."""
    url, dbname = _own_db(cluster, r_ns)
    db = pymongo.MongoClient(url)[dbname]
    env = {"GENTASK_WATCH_NAMESPACES": r_ns, "MONGO_URL": url, "GENTASK_AUDIT_SECONDS": "600"}
    op = start_operator(cluster, tmp_path / "op1.log", **env)
    tasks = Tasks(cluster, r_ns, op.log)
    try:
        name = tasks.create(type="text", model="fake-text", prompt="finished before the restart")
        tasks.wait_phase(name, "Succeeded", timeout=120)
        wait_for(lambda: _mirror_lag(db, _all(tasks)), 60, until=lambda lag: not lag, what="the record to be mirrored")
    finally:
        stop_operator(op)
    op = start_operator(cluster, tmp_path / "op2.log", **env)
    tasks = Tasks(cluster, r_ns, op.log)

    def audits() -> int:
        return (tmp_path / "op2.log").read_text(errors="replace").count('"audit done')
    try:
        wait_for(audits, 60, until=lambda n: n >= 1, what="the first audit of the restarted operator")
        db.tasks.delete_many({})
        db.drop_collection("tasks.timeline")
        assert _mirror_lag(db, _all(tasks)) == [name]
        wait_for(lambda: _mirror_lag(db, _all(tasks)), 90, interval=2, until=lambda lag: not lag,
                 what="the second audit to mirror the finished task again (nothing else brings it back)",
                 **tasks.watching(name))
        assert audits() >= 2
    finally:
        stop_operator(op)
