"""The operator under test: `gentask operator` as a real process against the local cluster,
its Jobs run by the process node with the real worker and the fake provider."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from gentask.domain import GROUP, PLURAL, VERSION
from tests.integration.conftest import Cluster, wait_default_account
from tests.support.waits import file_progress, wait_for, watching

TERMINAL = ("Succeeded", "Failed", "Cancelled")

# One task of each type with its fake model and what its artifact's bytes must start with: every
# executor's suite runs these (job in test_lifecycle, pool in test_pool).
EVERY_TYPE = pytest.mark.parametrize("type_,model,params,check", [
    ("image", "fake-image", {"size": "256x256"}, lambda b: b.startswith(b"\x89PNG")),
    ("video", "fake-video", {"duration": 1, "aspectRatio": "16:9"}, lambda b: b[4:8] == b"ftyp"),
    ("text", "fake-text", {"maxTokens": 12}, None),
])


def artifact_bytes(cluster: Cluster, name: str) -> bytes:
    """The bytes of a stored artifact, read from the cluster's MongoDB."""
    from gentask.config import load_settings
    from gentask.storage import ArtifactStore, connect
    stream = ArtifactStore(connect(load_settings(mongo_url=cluster.mongo_url))).open(name)
    assert stream is not None, f"artifact {name} is not in the store"
    return stream.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Operator:
    proc: subprocess.Popen
    metrics_port: int
    log: Path
    env: dict

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total


def start_operator(cluster: Cluster, log: Path, **extra: str) -> Operator:
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MONGO_URL": cluster.mongo_url,
           "GENTASK_METRICS_PORT": str(port), "GENTASK_RESYNC_SECONDS": "5", "GENTASK_WORKER_IMAGE": "gentask:dev",
           "LOG_LEVEL": "info", "GENTASK_WATCH_NAMESPACES": "t-*", **extra}
    proc = subprocess.Popen([sys.executable, "-m", "gentask", "operator"], env=env, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the operator exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        wait_for(ready, 60, what=f"the operator to be ready (log: {log})", progress=file_progress(log),
                 describe=lambda: log_tail(log))
    except BaseException:
        stop_operator(Operator(proc, port, log, env))      # never left running by a start that failed
        raise
    return Operator(proc, port, log, env)


def log_tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else ["(no log yet)"]
    return f"last lines of {log}:\n" + "\n".join(f"  | {line[:500]}" for line in text[-lines:])


def stop_operator(op: Operator, sig: int = signal.SIGTERM) -> None:
    if op.proc.poll() is None:
        os.killpg(op.proc.pid, sig)
        try:
            op.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(op.proc.pid, signal.SIGKILL)
            op.proc.wait(5)


def worker_namespace(cluster: Cluster, prefix: str, mongo_url: str | None = None, labels: dict | None = None) -> str:
    """A new namespace `<prefix>-…` with its default ServiceAccount and the credentials Secret the
    workers read (MONGO_URL only, the cluster's unless given: the fake provider needs no key)."""
    core = client.CoreV1Api(cluster.api)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, **({"labels": labels} if labels else {})}})
    wait_default_account(cluster, name)
    core.create_namespaced_secret(name, {"metadata": {"name": "gentask-credentials"},
                                         "stringData": {"MONGO_URL": mongo_url or cluster.mongo_url}})
    return name


@contextlib.contextmanager
def served_namespace(cluster: Cluster, log: Path, prefix: str) -> Iterator[tuple[str, Operator]]:
    """A namespace of its own, `<prefix>-…` (a name the session's operator, watching t-*, leaves
    alone), with the workers' credentials Secret and an operator that serves it alone: the tests of
    the clients (CLI, console) neither see nor disturb the tasks of the other suites."""
    ns = worker_namespace(cluster, prefix, labels={"gentask.io/test": "true"})
    try:
        op = start_operator(cluster, log, GENTASK_WATCH_NAMESPACES=ns)
        try:
            yield ns, op
        finally:
            stop_operator(op)
    finally:
        client.CoreV1Api(cluster.api).delete_namespace(ns, propagation_policy="Background")


@pytest.fixture(scope="session")
def operator(cluster, tmp_path_factory) -> Operator:
    op = start_operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
    yield op
    stop_operator(op)


@pytest.fixture
def tasks_ns(cluster, namespace, operator) -> str:
    """A namespace with the credentials Secret the workers read (MONGO_URL only: the fake needs no key)."""
    client.CoreV1Api(cluster.api).create_namespaced_secret(namespace, {
        "metadata": {"name": "gentask-credentials"}, "stringData": {"MONGO_URL": cluster.mongo_url}})
    return namespace


class Tasks:
    """The GenerationTasks of one namespace; `logs` are the files (the operator's log) that a failed
    wait quotes beside the task's description."""

    def __init__(self, cluster: Cluster, namespace: str, *logs: Path) -> None:
        self.cluster = cluster
        self.api = client.CustomObjectsApi(cluster.api)
        self.ns = namespace
        self.logs = logs

    def create(self, name: str | None = None, **spec) -> str:
        name = name or f"t-{uuid.uuid4().hex[:6]}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationTask", "metadata": {"name": name},
                "spec": {"provider": "fake", "userID": "tester", **spec}}
        self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)
        return name

    def get(self, name: str) -> dict:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def status(self, name: str) -> dict:
        try:
            return self.get(name).get("status") or {}
        except ApiException as exc:
            if exc.status == 404:
                return {"phase": "<deleted>"}
            raise

    def watching(self, name: str | None = None) -> dict:
        """progress and describe for wait_for: the task (or the namespace), its Job, pods, events, logs."""
        return watching(self.cluster, self.ns, task=name, logs=self.logs)

    def wait_status(self, name: str, until, timeout: float = 90, what: str = "") -> dict:
        """The task's status once until(status) holds; fails at once if the task ends or goes without it.

        timeout: how long the task, its Job and its pods may stay without any change (see tests.support.waits).
        """
        def ended(status: dict) -> str | None:
            phase = status.get("phase")
            if phase in TERMINAL or phase == "<deleted>":
                return f"the task is {phase} (reason {status.get('reason')}: {status.get('message')!r}), for good"
            return None
        return wait_for(lambda: self.status(name), timeout, what=f"task {self.ns}/{name} {what}".rstrip(),
                        until=until, abort=ended, **self.watching(name))

    def wait_phase(self, name: str, *phases: str, timeout: float = 90) -> dict:
        return self.wait_status(name, lambda s: s.get("phase") in phases, timeout,
                                what=f"to reach {'/'.join(phases)}")

    def patch_spec(self, name: str, **spec) -> None:
        self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)


@pytest.fixture
def tasks(cluster, tasks_ns, operator) -> Tasks:
    return Tasks(cluster, tasks_ns, operator.log)


QUOTAS = "generationquotas"


def make_quota(cluster, ns: str, name: str, user: str | None = None, **limits) -> None:
    spec: dict = {"limits": limits}
    if user is not None:
        spec["user"] = user
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        GROUP, VERSION, ns, QUOTAS, {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GenerationQuota",
                                     "metadata": {"name": name}, "spec": spec})


def patch_quota(cluster, ns: str, name: str, **limits) -> None:
    client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(GROUP, VERSION, ns, QUOTAS, name,
                                                                        {"spec": {"limits": limits}})


def quota_status(cluster, ns: str, name: str) -> dict:
    return client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, ns, QUOTAS, name).get("status") or {}
