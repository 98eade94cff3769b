"""kubectl users wait for a task the Kubernetes way: `kubectl wait` on its Succeeded condition or on
its phase, with the real kubectl against the real API server (README, "Waiting with kubectl")."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import yaml

from tests.integration.operator.conftest import Tasks
from tests.support.waits import describe_namespace

ROOT = Path(__file__).resolve().parents[3]
WAIT = "300s"       # kubectl's own deadline; a busy machine runs a fake task in seconds


def _wait(cluster, ns: str, tasks: Tasks, *args: str) -> subprocess.CompletedProcess:
    result = cluster.kubectl("wait", "-n", ns, f"--timeout={WAIT}", *args)
    assert result.returncode == 0, (f"kubectl wait {' '.join(args)} failed ({result.returncode}): "
                                    f"{result.stderr.strip()}\n{describe_namespace(cluster, ns, logs=tasks.logs)}")
    return result


def test_kubectl_wait_for_the_succeeded_condition_and_for_the_phase(cluster, tasks_ns, operator):
    tasks = Tasks(cluster, tasks_ns, operator.log)
    example = yaml.safe_load((ROOT / "examples" / "image-fake.yaml").read_text())
    applied = cluster.kubectl("apply", "-n", tasks_ns, "-f", "-", input=yaml.safe_dump(example))
    assert applied.returncode == 0, applied.stderr
    name = example["metadata"]["name"]
    # both waits start while the task runs; each returns once the task got there
    outcome: dict[str, subprocess.CompletedProcess] = {}
    phase_wait = threading.Thread(target=lambda: outcome.update(phase=_wait(
        cluster, tasks_ns, tasks, "--for=jsonpath={.status.phase}=Succeeded", f"gt/{name}")))
    phase_wait.start()
    condition = _wait(cluster, tasks_ns, tasks, "--for=condition=Succeeded", f"generationtask/{name}")
    phase_wait.join()
    assert condition.stdout.strip() == f"generationtask.gentask.io/{name} condition met"
    assert outcome["phase"].stdout.strip() == f"generationtask.gentask.io/{name} condition met"
    status = tasks.get(name)["status"]
    assert status["phase"] == "Succeeded" and status["result"]["images"]


def test_kubectl_wait_tells_a_failed_task_by_its_condition(cluster, tasks_ns, operator):
    """A failed task's Succeeded condition is False: `--for=condition=Succeeded=false` returns, and a
    wait for success runs out with kubectl's own timeout message."""
    tasks = Tasks(cluster, tasks_ns, operator.log)
    name = tasks.create(type="text", model="fake-text", prompt="no [fail:content_rejected]", retries=0)
    _wait(cluster, tasks_ns, tasks, "--for=condition=Succeeded=false", f"gt/{name}")
    status = tasks.get(name)["status"]
    assert status["phase"] == "Failed"
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", status["reason"])
    gave_up = cluster.kubectl("wait", "-n", tasks_ns, "--timeout=2s", "--for=condition=Succeeded", f"gt/{name}")
    assert gave_up.returncode != 0 and "timed out waiting for the condition" in gave_up.stderr
