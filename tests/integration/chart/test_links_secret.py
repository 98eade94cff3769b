"""The chart's link-key Secret against a real API server: what it holds is kept when the chart renders again.

`helm upgrade` renders with `lookup` answered by the cluster; `helm template --dry-run=server`
renders the same way without installing, which is what these tests run.
"""

from __future__ import annotations

import base64
import uuid

import pytest
import yaml
from kubernetes import client

from tests.support.helm import CHART, KUBE_VERSION, helm

KEPT = "kept-key-" + "k" * 40 + "," + "old-key-" + "o" * 40      # a rotation in progress, edited by hand


@pytest.fixture
def release_namespace(cluster):
    core = client.CoreV1Api(cluster.api)
    name = f"chart-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gentask.io/test": "true"}}})
    yield core, name
    core.delete_namespace(name, propagation_policy="Background")


def _rendered_key(cluster, namespace: str) -> str:
    out = helm("template", "t", str(CHART), "--namespace", namespace, "--dry-run=server",
               "--kube-version", KUBE_VERSION, "--show-only", "templates/api-links-secret.yaml",
               kubeconfig=cluster.kubeconfig).stdout
    (secret,) = [d for d in yaml.safe_load_all(out) if d]
    return base64.b64decode(secret["data"]["GENTASK_API_LINK_KEYS"]).decode()


def test_a_render_against_the_cluster_keeps_the_secrets_keys(cluster, release_namespace):
    core, namespace = release_namespace
    fresh = _rendered_key(cluster, namespace)              # nothing there yet: a new random key
    assert len(fresh) == 64
    core.create_namespaced_secret(namespace, {"metadata": {"name": "t-gentask-api-links"},
                                              "stringData": {"GENTASK_API_LINK_KEYS": KEPT}})
    assert _rendered_key(cluster, namespace) == KEPT == _rendered_key(cluster, namespace)
