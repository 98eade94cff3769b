"""The chart's task-owner admission policy, enforced by the real API server on real users.

The policy is rendered from the chart (`helm template`), bound to this test's namespace only, and
applied; alice and carol are users with client certificates signed by the local cluster's CA
(`python -m devcluster user`), allowed by RBAC to create GenerationTasks; the REST API's service
account and a GitOps controller's are exempt.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from devcluster import DevCluster, tools_dir
from tests.integration.conftest import wait_default_account
from tests.support.helm import render
from tests.support.waits import wait_for

MAP = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"
ADMISSION_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy",
                   "MutatingAdmissionPolicyBinding")


def task(name: str, user: str | None) -> dict:
    spec = {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "hi"}
    if user is not None:
        spec["userID"] = user
    return {"apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask", "metadata": {"name": name}, "spec": spec}


class User:
    def __init__(self, kubeconfig: Path, ns: str) -> None:
        self.kubeconfig, self.ns = kubeconfig, ns

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run([str(tools_dir() / "bin" / "kubectl"), "-n", self.ns, *args], input=input, env=env,
                              capture_output=True, text=True, timeout=60)

    def create(self, user: str | None, *, dry_run: bool = False) -> subprocess.CompletedProcess:
        name = f"own-{uuid.uuid4().hex[:6]}"
        extra = ["--dry-run=server"] if dry_run else []
        return self.kubectl("create", "-o", "json", *extra, "-f", "-", input=yaml.safe_dump(task(name, user)))


def _apply(api: client.ApiClient, docs: list[dict]) -> list[tuple[str, str]]:
    adm = client.AdmissionregistrationV1Api(api)
    made = []
    for doc in docs:
        kind = doc["kind"]
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")
        getattr(adm, f"create_{snake}")(doc)
        made.append((snake, doc["metadata"]["name"]))
    return made


def _delete(api: client.ApiClient, made: list[tuple[str, str]]) -> None:
    adm = client.AdmissionregistrationV1Api(api)
    for snake, name in made:
        try:
            getattr(adm, f"delete_{snake}")(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def owner_ns(cluster):
    core = client.CoreV1Api(cluster.api)
    run = uuid.uuid4().hex[:6]
    ns = f"owner-{run}"
    labels = {"gentask.io/test": "true", "gentask.io/owner-test": run}
    core.create_namespace({"metadata": {"name": ns, "labels": labels}})
    wait_default_account(cluster, ns)
    made: list[tuple[str, str]] = []
    yield ns, run, made
    _delete(cluster.api, made)
    core.delete_namespace(ns, propagation_policy="Background")


def _service_account_user(cluster, ns: str, name: str, folder: Path) -> User:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": name}})
    token = core.create_namespaced_service_account_token(name, ns, {"spec": {"expirationSeconds": 3600}}).status.token
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    admin["users"] = [{"name": name, "user": {"token": token}}]
    admin["contexts"] = [{"name": name, "context": {"cluster": admin["clusters"][0]["name"], "user": name}}]
    admin["current-context"] = name
    path = folder / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(admin))
    return User(path, ns)


def test_a_kubectl_user_may_create_tasks_only_for_itself(cluster, owner_ns, tmp_path):
    ns, run, made = owner_ns
    release = f"own-{run}"
    gitops = f"system:serviceaccount:{ns}:gitops"
    values = {"fullnameOverride": release, "ownership": {
        "users": {"carol": "u-carol"}, "exemptUsers": [gitops],
        "namespaceSelector": {"matchLabels": {"gentask.io/owner-test": run}}}}
    docs = [d for d in render("--namespace", ns, "--api-versions", MAP, values=values, tmp=tmp_path)
            if d["kind"] in ADMISSION_KINDS and "task-owner" in d["metadata"]["name"]]
    assert sorted(d["kind"] for d in docs) == sorted(ADMISSION_KINDS)
    validating = [d for d in docs if d["kind"].startswith("Validating")]
    mutating = [d for d in docs if d["kind"].startswith("Mutating")]

    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_namespaced_role(ns, {"metadata": {"name": "task-creators"}, "rules": [
        {"apiGroups": ["gentask.io"], "resources": ["generationtasks"], "verbs": ["create", "get", "list"]}]})
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "task-creators"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "task-creators"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"},
                     {"kind": "User", "name": "carol", "apiGroup": "rbac.authorization.k8s.io"},
                     {"kind": "ServiceAccount", "name": f"{release}-api", "namespace": ns},
                     {"kind": "ServiceAccount", "name": "gitops", "namespace": ns}]})
    dev = DevCluster(cluster.kubeconfig.parent)
    alice = User(dev.user_kubeconfig("alice", ["team-a"]), ns)
    carol = User(dev.user_kubeconfig("carol"), ns)
    api_sa = _service_account_user(cluster, ns, f"{release}-api", tmp_path)
    gitops_sa = _service_account_user(cluster, ns, "gitops", tmp_path)
    assert "alice" in alice.kubectl("auth", "whoami").stdout

    # before the policy: alice may put a task into bob's history (what the policy is for)
    assert alice.create("bob", dry_run=True).returncode == 0

    made += _apply(cluster.api, validating)
    refused = wait_for(lambda: alice.create("bob", dry_run=True), 30, interval=0.3,
                       until=lambda p: p.returncode != 0, what="the API server to enforce the policy")
    message = "spec.userID may only be your own identity: alice may create tasks for alice, not for bob"
    assert message in refused.stderr, refused.stderr
    assert "(the gentask task-owner policy" in refused.stderr

    # for real: her own userID passes, another user's is refused by the API server, with the message
    own = alice.create("alice")
    assert own.returncode == 0, own.stderr
    other = alice.create("bob")
    assert other.returncode != 0 and message in other.stderr, other.stderr
    assert "forbidden" in other.stderr.lower()
    # a mapping: carol's identity is u-carol, not her username
    assert carol.create("u-carol").returncode == 0
    mapped = carol.create("carol")
    assert "carol may create tasks for u-carol, not for carol" in mapped.stderr, mapped.stderr
    # exempt: the REST API's service account and the GitOps controller set any userID
    for exempt in (api_sa, gitops_sa):
        made_for_bob = exempt.create("bob")
        assert made_for_bob.returncode == 0, made_for_bob.stderr
    # without the defaulting policy, a task without userID is refused, naming the userID to set
    missing = alice.create(None)
    assert "spec.userID is required: set it to your own identity, alice" in missing.stderr, missing.stderr

    # with it (the chart installs it where the API server serves MutatingAdmissionPolicy), it is defaulted
    made += _apply(cluster.api, mutating)
    defaulted = wait_for(lambda: alice.create(None, dry_run=True), 30, interval=0.3,
                         until=lambda p: p.returncode == 0, what="the defaulting policy to take effect")
    assert yaml.safe_load(defaulted.stdout)["spec"]["userID"] == "alice"
    real = carol.create(None)
    assert real.returncode == 0, real.stderr
    assert yaml.safe_load(real.stdout)["spec"]["userID"] == "u-carol"
    # the exempt API account is never defaulted (it always names the user)
    assert api_sa.create(None).returncode == 0
    # the tasks as the API server keeps them
    listed = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
        "gentask.io", "v1alpha1", ns, "generationtasks")["items"]
    assert sorted(t["spec"].get("userID", "") for t in listed) == sorted(
        ["alice", "u-carol", "bob", "bob", "u-carol", ""])
