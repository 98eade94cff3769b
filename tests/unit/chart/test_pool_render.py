"""The chart with the pool executor (operator.executor=pool): the pool's Deployment, its account
and what it may do; nothing of it with the other executors."""

from __future__ import annotations

from tests.support.helm import CHART, helm, render

POOL = ("--set", "operator.executor=pool", "--set", "taskNamespace.name=jobs")


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    names = [d["metadata"]["name"] for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} {name}, got {names}"
    return found[0]


def rules(role: dict) -> set[tuple[str, str, frozenset[str]]]:
    return {(r["apiGroups"][0], res, frozenset(r["verbs"])) for r in role["rules"] for res in r["resources"]}


def test_no_pool_unless_the_executor_is_pool():
    for executor in ("job", "inline"):
        docs = render("--set", f"operator.executor={executor}")
        assert not [d for d in docs if "pool" in d["metadata"]["name"]], executor
    helm("lint", str(CHART), "--strict", "--kube-version", "1.36.3", *POOL)


def test_the_pool_deployment_scales_by_replicas_with_its_settings_and_credentials_as_env():
    docs = render(*POOL, "--set", "pool.replicas=3", "--set", "pool.concurrency=8", "--set", "image.tag=1.2.3")
    dep = named(docs, "Deployment", "t-gentask-pool")
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["namespace"] == "gentask"
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "t-gentask-pool"
    security = pod["securityContext"]
    assert security["runAsNonRoot"] and security["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["terminationGracePeriodSeconds"] == 30          # drainSeconds 20 + 10
    c = pod["containers"][0]
    assert c["args"] == ["worker", "pool"] and c["image"] == "ghcr.io/gentask/gentask:1.2.3"
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["envFrom"] == [{"secretRef": {"name": "gentask-credentials"}}]
    env = {e["name"]: e for e in c["env"]}
    assert env["GENTASK_WATCH_NAMESPACES"]["value"] == "jobs" and env["GENTASK_POOL_CONCURRENCY"]["value"] == "8"
    assert env["GENTASK_POOL_LEASE_NAMESPACE"]["value"] == "gentask"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert not any("value" in e and e["name"] in ("MONGO_URL", "OPENAI_API_KEY") for e in c["env"])
    op = named(docs, "Deployment", "t-gentask-operator")
    op_env = {e["name"]: e for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert op_env["GENTASK_EXECUTOR"]["value"] == "pool"
    assert op_env["GENTASK_POOL_LEASE_NAMESPACE"]["value"] == "gentask"


def test_the_pool_account_is_least_privilege():
    docs = render(*POOL)
    assert named(docs, "ServiceAccount", "t-gentask-pool")["metadata"]["namespace"] == "gentask"
    tasks_role = named(docs, "Role", "t-gentask-pool")
    assert tasks_role["metadata"]["namespace"] == "jobs"
    assert rules(tasks_role) == {("gentask.io", "generationtasks", frozenset({"get", "list", "watch"})),
                                 ("gentask.io", "generationtasks/status", frozenset({"patch"}))}
    leases = named(docs, "Role", "t-gentask-pool-leases")
    assert leases["metadata"]["namespace"] == "gentask"
    assert rules(leases) == {("coordination.k8s.io", "leases", frozenset({"create", "patch", "delete"}))}
    operator_leases = named(docs, "Role", "t-gentask-operator-pool-leases")
    assert rules(operator_leases) == {("coordination.k8s.io", "leases", frozenset({"list"}))}
    for name, role in (("t-gentask-pool", "t-gentask-pool"), ("t-gentask-pool-leases", "t-gentask-pool-leases")):
        binding = named(docs, "RoleBinding", name)
        assert binding["roleRef"]["name"] == role
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "t-gentask-pool", "namespace": "gentask"}]
    assert not any("secrets" in r["resources"] for d in docs if d["kind"] == "Role" and "pool" in d["metadata"]["name"]
                   for r in d["rules"])


def test_schema_refuses_bad_pool_values():
    for bad in (["--set", "pool.concurrency=0"], ["--set", "pool.replicas=-1"], ["--set", "pool.unknown=1"],
                ["--set", "operator.executor=threads"]):
        proc = helm("template", "t", str(CHART), "--kube-version", "1.36.3", *POOL, *bad, check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, f"{bad} was accepted:\n{proc.stderr}"
