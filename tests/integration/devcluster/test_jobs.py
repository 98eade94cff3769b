"""batch/v1 Jobs on the process node, driven by the real Job controller and scheduler."""

from __future__ import annotations

import json
import time

from kubernetes import client

from tests.support.waits import describe_namespace, wait_for, watching

PY = "python:3.11"


def job(name: str, code: str, backoff: int = 0, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff, **spec, "template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "main", "image": PY, "command": ["python", "-c", code]}]}}}}


def job_condition(batch: client.BatchV1Api, ns: str, name: str):
    def check():
        got = batch.read_namespaced_job_status(name, ns)
        for c in got.status.conditions or []:
            if c.type in ("Complete", "Failed") and c.status == "True":
                return c
        return None
    return check


def _pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[tuple[str, str]]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [(p.metadata.name, p.status.phase) for p in pods]


def test_a_short_python_job_completes(cluster, namespace):
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job("hello", "print('hello from a process pod')"))
    cond = wait_for(job_condition(batch, namespace, "hello"), 60, what="Job hello to finish",
                    **watching(cluster, namespace))
    assert cond.type == "Complete"
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, label_selector="job-name=hello").items
    assert len(pods) == 1 and pods[0].status.phase == "Succeeded"
    state = pods[0].status.container_statuses[0].state.terminated
    assert state.exit_code == 0 and state.reason == "Completed"
    assert "hello from a process pod" in cluster.pod_log(namespace, pods[0].metadata.name)


def test_a_failing_job_exhausts_its_backoff_limit(cluster, namespace):
    batch = client.BatchV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job("fails", "import sys; sys.exit(3)", backoff=1))
    cond = wait_for(job_condition(batch, namespace, "fails"), 90, what="Job fails to fail",
                    **watching(cluster, namespace))
    assert (cond.type, cond.reason) == ("Failed", "BackoffLimitExceeded")
    assert batch.read_namespaced_job_status("fails", namespace).status.failed == 2  # first try + 1 retry
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, label_selector="job-name=fails").items
    assert {p.status.container_statuses[0].state.terminated.exit_code for p in pods} == {3}


def test_pod_failure_policy_fails_the_job_at_once_on_an_exit_code(cluster, namespace):
    batch = client.BatchV1Api(cluster.api)
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                             "values": [42]}},
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    batch.create_namespaced_job(namespace, job("permanent", "import sys; sys.exit(42)", backoff=5,
                                               podFailurePolicy=policy))
    cond = wait_for(job_condition(batch, namespace, "permanent"), 60, what="Job permanent to fail",
                    **watching(cluster, namespace))
    assert (cond.type, cond.reason) == ("Failed", "PodFailurePolicy")
    assert batch.read_namespaced_job_status("permanent", namespace).status.failed == 1  # no retry spent


def test_active_deadline_stops_a_sleeping_pod(cluster, namespace):
    batch = client.BatchV1Api(cluster.api)
    core = client.CoreV1Api(cluster.api)
    batch.create_namespaced_job(namespace, job("sleeper", "import time; time.sleep(300)", activeDeadlineSeconds=3))
    started = time.monotonic()
    cond = wait_for(job_condition(batch, namespace, "sleeper"), 60, what="Job sleeper to hit its deadline",
                    **watching(cluster, namespace))
    assert (cond.type, cond.reason) == ("Failed", "DeadlineExceeded")
    assert time.monotonic() - started < 30
    wait_for(lambda: _pods(core, namespace, "job-name=sleeper"), 30, until=lambda pods: not pods,
             what="the sleeping pod to be gone", **watching(cluster, namespace))


def test_env_is_resolved_like_a_kubelet_and_rbac_is_real(cluster, namespace):
    core = client.CoreV1Api(cluster.api)
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "X": "1"}})
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "worker"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "read-cfg"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "read-cfg"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                     "name": "read-cfg"},
        "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": namespace}]})
    code = """
import json, os
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config()
ns = os.environ["MY_NAMESPACE"]
out = {k: os.environ.get(k) for k in ["SECRET", "MODE", "MY_NAMESPACE", "MY_POD", "MY_LABEL", "GREETING",
                                      "CFG_X", "MISSING_OPTIONAL", "KUBECONFIG"]}
review = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1",
                                                                  "kind": "SelfSubjectReview"})
out["user"] = review.status.user_info.username
out["configmap"] = client.CoreV1Api().read_namespaced_config_map("cfg", ns).data["mode"]
try:
    client.CoreV1Api().list_namespaced_secret(ns)
    out["secrets"] = "allowed"
except ApiException as e:
    out["secrets"] = e.status
print("RESULT " + json.dumps(out))
"""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "envcheck", "labels": {"team": "gen"}},
           "spec": {"restartPolicy": "Never", "serviceAccountName": "worker", "containers": [{
               "name": "main", "image": PY, "command": ["python", "-c", code],
               "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
               "env": [
                   {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
                   {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                   {"name": "MY_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                   {"name": "MY_POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                   {"name": "MY_LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
                   {"name": "GREETING", "value": "hi $(MY_POD) in $(MY_NAMESPACE)"},
                   {"name": "MISSING_OPTIONAL", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k",
                                                                               "optional": True}}},
               ]}]}}
    core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: core.read_namespaced_pod("envcheck", namespace).status.phase, 60,
             until=lambda phase: phase in ("Succeeded", "Failed"), what="pod envcheck to finish",
             **watching(cluster, namespace))
    log = cluster.pod_log(namespace, "envcheck")
    assert core.read_namespaced_pod("envcheck", namespace).status.phase == "Succeeded", log
    out = json.loads(log.split("RESULT ", 1)[1])
    assert out["SECRET"] == "s3cr3t" and out["MODE"] == "fast" and out["CFG_X"] == "1"
    assert out["MY_NAMESPACE"] == namespace and out["MY_POD"] == "envcheck" and out["MY_LABEL"] == "gen"
    assert out["GREETING"] == f"hi envcheck in {namespace}" and out["MISSING_OPTIONAL"] is None
    assert out["user"] == f"system:serviceaccount:{namespace}:worker"
    assert out["configmap"] == "fast" and out["secrets"] == 403  # RBAC allows configmaps, denies secrets
    assert str(cluster.kubeconfig) != out["KUBECONFIG"]


def test_a_missing_secret_waits_then_runs_when_it_appears(cluster, namespace):
    core = client.CoreV1Api(cluster.api)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "waits"},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "main", "image": PY, "command": ["python", "-c", "import os; print(os.environ['K'])"],
               "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]}]}}
    core.create_namespaced_pod(namespace, pod)

    def waiting():
        st = core.read_namespaced_pod("waits", namespace).status.container_statuses
        return st and st[0].state.waiting
    w = wait_for(waiting, 30, what="CreateContainerConfigError", **watching(cluster, namespace))
    assert w.reason == "CreateContainerConfigError" and 'secret "later" not found' in w.message
    core.create_namespaced_secret(namespace, {"metadata": {"name": "later"}, "stringData": {"k": "now-here"}})
    wait_for(lambda: core.read_namespaced_pod("waits", namespace).status.phase, 30,
             until=lambda phase: phase == "Succeeded", what="pod to run once the secret exists",
             **watching(cluster, namespace))
    assert "now-here" in cluster.pod_log(namespace, "waits")


def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(cluster, namespace):
    core = client.CoreV1Api(cluster.api)
    polite = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM', flush=True), sys.exit(0)))\n"
              "print('ready', flush=True); time.sleep(300)")
    stubborn = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True); time.sleep(300)")
    for name, code in (("polite", polite), ("stubborn", stubborn)):
        core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                                               "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
                                                        "containers": [{"name": "main", "image": PY,
                                                                        "command": ["python", "-c", code]}]}})
    for name in ("polite", "stubborn"):
        wait_for(lambda n=name: cluster.pod_log(namespace, n), 30, until=lambda log: "ready" in log,
                 what=f"{name} to start", **watching(cluster, namespace))
        assert core.read_namespaced_pod(name, namespace).status.phase == "Running"
    t0 = time.monotonic()
    for name in ("polite", "stubborn"):
        core.delete_namespaced_pod(name, namespace)

    def gone(name):
        return not [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name == name]
    # timed: no progress probes between two looks (describe_namespace only runs if the wait fails)
    wait_for(lambda: gone("polite"), 20, interval=0.05, what="polite pod to go",
             describe=lambda: describe_namespace(cluster, namespace))
    polite_s = time.monotonic() - t0
    wait_for(lambda: gone("stubborn"), 20, interval=0.05, what="stubborn pod to go",
             describe=lambda: describe_namespace(cluster, namespace))
    stubborn_s = time.monotonic() - t0
    assert "got SIGTERM" in cluster.pod_log(namespace, "polite")
    assert polite_s < 2.0, "a pod that exits on SIGTERM goes at once"
    assert 1.8 <= stubborn_s < 10, "a pod that ignores SIGTERM is killed after its 2 s grace period"


def test_kubectl_logs_reads_a_process_pod_through_the_api_server(cluster, namespace):
    """The process node serves the kubelet's log endpoint: `kubectl logs` (whole, --tail, -f) works."""
    core = client.CoreV1Api(cluster.api)
    code = "import time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n    time.sleep(0.5)\n"
    core.create_namespaced_pod(namespace, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "talker"},
                                           "spec": {"restartPolicy": "Never", "containers": [
                                               {"name": "main", "image": PY, "command": ["python", "-c", code]}]}})
    wait_for(lambda: core.read_namespaced_pod("talker", namespace).status.phase, 60,
             until=lambda phase: phase in ("Running", "Succeeded", "Failed"), what="pod talker to start",
             **watching(cluster, namespace))
    followed = cluster.kubectl("logs", "-f", "talker", "-n", namespace)       # returns when the pod ends
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.splitlines() == ["line 0", "line 1", "line 2"]
    wait_for(lambda: core.read_namespaced_pod("talker", namespace).status.phase, 60,
             until=lambda phase: phase == "Succeeded", what="pod talker to succeed", **watching(cluster, namespace))
    tail = cluster.kubectl("logs", "--tail=1", "talker", "-n", namespace, check=True)
    assert tail.stdout == "line 2\n"
    missing = cluster.kubectl("logs", "talker", "-c", "nope", "-n", namespace)
    assert missing.returncode != 0 and "nope" in missing.stderr
