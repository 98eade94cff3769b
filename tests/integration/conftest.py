"""Session fixtures: one local cluster and FerretDB for the whole run, a fresh namespace a test.

Reuse: with GENTASK_TEST_KUBECONFIG and GENTASK_TEST_MONGO_URL set, the tests use that cluster
and MongoDB and start nothing; else a cluster already running in .devcluster (or in the folder
GENTASK_DEVCLUSTER_ROOT names; e.g. from `make devcluster-up`) is reused and left running; else
one is started there and stopped at the end.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from devcluster import DevCluster, tools_dir
from devcluster.system import bootstrap
from tests.support.waits import describe_namespace, wait_for  # wait_for: also imported from here by older tests

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    kubeconfig: Path
    mongo_url: str
    api: client.ApiClient

    def kubectl(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run([str(tools_dir() / "bin" / "kubectl"), *args], input=input, env=env,
                              capture_output=True, text=True, check=check, timeout=60)

    def pod_log(self, namespace: str, pod: str, container: str = "main") -> str:
        """What the process node kept of a pod's output (.devcluster/node/pods/NS_POD_UID8/C.log)."""
        folders = list((self.kubeconfig.parent / "node" / "pods").glob(f"{namespace}_{pod}_*"))
        return "".join((f / f"{container}.log").read_text(errors="replace")
                       for f in folders if (f / f"{container}.log").exists())


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubeconfig, mongo_url = os.environ.get("GENTASK_TEST_KUBECONFIG"), os.environ.get("GENTASK_TEST_MONGO_URL")
    started: DevCluster | None = None
    if not (kubeconfig and mongo_url):
        dev = DevCluster(Path(os.environ.get("GENTASK_DEVCLUSTER_ROOT", ROOT / ".devcluster")))
        state = dev.running()
        if state is None:
            state = dev.up(timeout=180)
            started = dev
        kubeconfig, mongo_url = str(state.kubeconfig), state.mongo_url
    api = config.new_client_from_config(kubeconfig)
    try:
        bootstrap(api)
        yield Cluster(Path(kubeconfig), mongo_url, api)
    finally:
        api.close()
        if started is not None:
            started.down()


@pytest.fixture
def namespace(cluster: Cluster) -> str:
    """A fresh namespace whose default service account exists; deleted after the test."""
    core = client.CoreV1Api(cluster.api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gentask.io/test": "true"}}})
    wait_default_account(cluster, name)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def has_default_account(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def wait_default_account(cluster: Cluster, namespace: str) -> None:
    """Wait until the service-account controller made the namespace's default account (pods need it)."""
    core = client.CoreV1Api(cluster.api)
    wait_for(lambda: has_default_account(core, namespace), 60, interval=0.1,
             what=f"namespace {namespace}'s default service account",
             describe=lambda: describe_namespace(cluster, namespace, pod_logs=False))
