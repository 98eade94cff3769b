"""The API server's verdict on the chart's rendered manifests (a server-side dry run)."""

from __future__ import annotations

import yaml

from tests.e2e.conftest import create_namespace
from tests.integration.conftest import Cluster
from tests.support.helm import render
from tests.unit.chart.test_render import by_kind


def test_server_side_dry_run_accepts_every_rendered_manifest(cluster: Cluster, namespace: str):
    """The API server (admission, schema validation, Pod Security of the namespace) takes them all."""
    task_ns = f"{namespace}-tasks"
    create_namespace(cluster, task_ns)          # a dry run cannot create objects inside a new namespace
    try:
        cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", check=True)
        docs = render("--namespace", namespace, "--set", f"taskNamespace.name={task_ns}",
                      "--set", "api.auth.existingSecret=keys")
        manifest = yaml.safe_dump_all(docs)
        proc = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
        assert proc.returncode == 0, proc.stderr
        applied = [line for line in proc.stdout.splitlines() if "(server dry run)" in line]
        assert len(applied) == len(docs), proc.stdout
        # Pod Security only warns about a Deployment; it enforces on pods. So each pod template goes
        # through admission as a Pod in the restricted namespace, and a non-compliant one is refused.
        for dep in by_kind(docs, "Deployment"):
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": dep["metadata"]["name"], "namespace": namespace},
                   # (the dry run made no service account)
                   "spec": {**dep["spec"]["template"]["spec"], "serviceAccountName": "default"}}
            admitted = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))
            assert admitted.returncode == 0, admitted.stderr
            pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
            refused = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))
            assert refused.returncode != 0 and "PodSecurity" in refused.stderr, refused.stderr
    finally:
        cluster.kubectl("delete", "namespace", task_ns, "--wait=false")
