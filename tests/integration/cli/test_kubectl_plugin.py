"""`kubectl gentask …` run by the real kubectl (a plugin found on PATH), against the local cluster,
with an operator of this module's own running the tasks; RBAC is the caller's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from devcluster import tools_dir
from gentask.cli.task import EXIT_CANCELLED, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE
from tests.integration.api.conftest import free_port
from tests.integration.operator.conftest import Tasks, served_namespace
from tests.support.waits import wait_for

BIN = Path(sys.executable).parent          # where `kubectl-gentask` is installed


@pytest.fixture(scope="module")
def served(cluster, tmp_path_factory):
    with served_namespace(cluster, tmp_path_factory.mktemp("plugin-operator") / "operator.log", "plugin") as pair:
        yield pair


@pytest.fixture
def tasks_ns(served) -> str:
    return served[0]


@pytest.fixture
def operator(served):
    return served[1]


def kubectl(cluster, *args: str, kubeconfig: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or cluster.kubeconfig),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("GENTASK_URL", None)
    return subprocess.run([str(tools_dir() / "bin" / "kubectl"), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_create_wait_get_describe_logs(cluster, tasks_ns, operator):
    listed = kubectl(cluster, "plugin", "list")
    assert "kubectl-gentask" in listed.stdout, listed.stdout + listed.stderr
    made = kubectl(cluster, "gentask", "create", "text", "write a haiku", "--provider", "fake", "--model",
                   "fake-text", "--param", "max_tokens=20", "--name", "haiku", "--wait", "-n", tasks_ns)
    assert made.returncode == EXIT_OK, made.stderr
    assert f"generationtask.gentask.io/haiku created in {tasks_ns}" in made.stderr
    row = next(line.split() for line in made.stdout.splitlines() if line.startswith("haiku"))
    assert row[:5] == ["haiku", "text", "fake", "fake-text", "Succeeded"]

    table = kubectl(cluster, "gentask", "get", "-n", tasks_ns)
    assert table.stdout.splitlines()[0].split()[:5] == ["NAME", "TYPE", "PROVIDER", "MODEL", "PHASE"]
    one = json.loads(kubectl(cluster, "gentask", "get", "haiku", "-o", "json", "-n", tasks_ns).stdout)
    assert one["spec"]["params"] == {"maxTokens": 20} and one["status"]["result"]["text"]

    described = kubectl(cluster, "gentask", "describe", "haiku", "-n", tasks_ns)
    assert described.returncode == 0, described.stderr
    text = described.stdout
    assert "Phase:       Succeeded" in text and "Model:       fake/fake-text" in text
    cost = one["status"]["cost"]                          # what it cost, as the status says, with each attempt
    assert f"Cost:        {cost['amount']} XTS" in text and "fake/fake-text Succeeded:" in text
    conditions = text.split("Conditions:")[1].split("Pods:")[0]
    assert any(line.split()[:2] == ["Succeeded", "True"] for line in conditions.splitlines())
    pods = text.split("Pods:")[1].split("Events:")[0]
    assert one["status"]["jobName"] in pods or one["status"]["workerPod"] in pods
    events = text.split("Events:")[1]
    assert "Completed" in events or "Started" in events, text

    logs = kubectl(cluster, "gentask", "logs", "haiku", "-n", tasks_ns)
    assert logs.returncode == 0, logs.stderr
    assert "haiku" in logs.stdout and logs.stdout.strip()       # the worker's log names its task
    tail = kubectl(cluster, "gentask", "logs", "haiku", "--tail", "1", "-n", tasks_ns)
    assert len(tail.stdout.strip().splitlines()) == 1

    link = kubectl(cluster, "gentask", "open", "haiku", "--url", "https://gentask.example.com/", "-n", tasks_ns)
    assert link.returncode == 0 and link.stdout == "https://gentask.example.com/console/#/task/haiku\n"
    nowhere = kubectl(cluster, "gentask", "open", "haiku", "-n", tasks_ns)
    assert nowhere.returncode == EXIT_USAGE and "GENTASK_URL" in nowhere.stderr


def test_cancel_and_what_cannot_be_cancelled(cluster, tasks_ns, operator):
    made = kubectl(cluster, "gentask", "create", "text", "slow [latency:120s]", "--provider", "fake", "--model",
                   "fake-text", "--name", "slow", "-o", "name", "-n", tasks_ns)
    assert made.returncode == 0 and made.stdout.strip() == "slow", made.stderr
    asked = kubectl(cluster, "gentask", "cancel", "slow", "-n", tasks_ns)
    assert asked.returncode == 0 and "cancel requested" in asked.stdout, asked.stderr
    tasks = Tasks(cluster, tasks_ns, operator.log)
    wait_for(lambda: tasks.status("slow").get("phase"), 120, until=lambda p: p == "Cancelled",
             what="the task to be cancelled")
    again = kubectl(cluster, "gentask", "cancel", "slow", "-n", tasks_ns)
    assert again.returncode == EXIT_REFUSED and "already finished (Cancelled)" in again.stderr
    # a `create --wait` whose task someone cancels leaves with the cancelled exit code
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    waiting = subprocess.Popen([str(BIN / "kubectl-gentask"), "create", "text", "x [latency:120s]", "--provider",
                                "fake", "--model", "fake-text", "--name", "followed", "--wait", "-n", tasks_ns],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: tasks.status("followed").get("phase"), 120, until=lambda p: p in ("Queued", "Running"),
             what="the followed task to start")
    assert kubectl(cluster, "gentask", "cancel", "followed", "-n", tasks_ns).returncode == 0
    out, err = waiting.communicate(timeout=180)
    assert waiting.returncode == EXIT_CANCELLED, err
    assert "followed" in out and "Cancelled" in out


def test_mistakes_and_refusals_say_what_to_do(cluster, tasks_ns, operator, tmp_path):
    bad = kubectl(cluster, "gentask", "create", "image", "a fox", "--provider", "fake", "--model", "fake-image",
                  "--param", "size=big", "-n", tasks_ns)
    assert bad.returncode == EXIT_USAGE and "the task would be refused: params.size" in bad.stderr
    bad_param = kubectl(cluster, "gentask", "create", "image", "a fox", "--provider", "fake", "--model",
                        "fake-image", "--param", "size", "-n", tasks_ns)
    assert bad_param.returncode == EXIT_USAGE and "--param takes NAME=VALUE" in bad_param.stderr
    unknown = kubectl(cluster, "gentask", "describe", "nope", "-n", tasks_ns)
    assert unknown.returncode == EXIT_REFUSED and "no GenerationTask 'nope'" in unknown.stderr
    assert f"kubectl gentask get -n {tasks_ns}" in unknown.stderr

    # a user whose RBAC lets it read tasks but not create them: the API server's refusal, said plainly
    core, rbac = client.CoreV1Api(cluster.api), client.RbacAuthorizationV1Api(cluster.api)
    core.create_namespaced_service_account(tasks_ns, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(tasks_ns, {"metadata": {"name": "task-reader"}, "rules": [
        {"apiGroups": ["gentask.io"], "resources": ["generationtasks"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(tasks_ns, {
        "metadata": {"name": "reader"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                    "name": "task-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": tasks_ns}]})
    token = core.create_namespaced_service_account_token("reader", tasks_ns, {"spec": {"expirationSeconds": 3600}})
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    reader = tmp_path / "reader.kubeconfig"
    reader.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "reader",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": "reader", "user": {"token": token.status.token}}],
        "contexts": [{"name": "reader", "context": {"cluster": "local", "user": "reader", "namespace": tasks_ns}}]}))
    listed = kubectl(cluster, "gentask", "get", kubeconfig=reader)            # the context's namespace
    assert listed.returncode == 0, listed.stderr
    refused = kubectl(cluster, "gentask", "create", "text", "hi", "--provider", "fake", "--model", "fake-text",
                      kubeconfig=reader)
    assert refused.returncode == EXIT_REFUSED and "403" in refused.stderr and "forbidden" in refused.stderr

    away = tmp_path / "away.kubeconfig"
    away.write_text(yaml.safe_dump({**admin, "clusters": [{"name": admin["clusters"][0]["name"], "cluster": {
        **server, "server": f"https://127.0.0.1:{free_port()}"}}]}))
    gone = kubectl(cluster, "gentask", "get", "-n", tasks_ns, kubeconfig=away)
    assert gone.returncode == EXIT_UNREACHABLE and "cannot reach the cluster" in gone.stderr
