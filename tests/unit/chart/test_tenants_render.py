"""Tenants in the chart as `helm template` renders them: the operator's settings and its RBAC, per
namespace for listed tenants and cluster-wide only for tenants that opt in by label."""

from __future__ import annotations

from tests.support.helm import CHART, helm, render
from tests.unit.chart.test_render import by_kind, env_of, one


def _rules(role: dict) -> dict[tuple[str, str], tuple[set[str], tuple[str, ...] | None]]:
    return {(r["apiGroups"][0], res): (set(r["verbs"]), tuple(r["resourceNames"]) if "resourceNames" in r else None)
            for r in role["rules"] for res in r["resources"]}


def test_listed_tenants_get_a_role_each_and_no_cluster_wide_rights():
    docs = render("--set", "tenants.namespaces={team-a,team-b}")
    env = env_of(one(docs, "Deployment", "operator"))
    assert env["GENTASK_WATCH_NAMESPACES"]["value"] == "gentask-tasks,team-a,team-b"
    assert env["GENTASK_TENANT_NAMESPACES"]["value"] == "gentask-tasks,team-a,team-b"
    assert "GENTASK_TENANT_LABEL" not in env
    for name in ("t-gentask-operator", "t-gentask-api"):
        roles = [r for r in by_kind(docs, "Role") if r["metadata"]["name"] == name]
        assert sorted(r["metadata"]["namespace"] for r in roles) == ["gentask-tasks", "team-a", "team-b"]
        bindings = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["name"] == name]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["gentask-tasks", "team-a", "team-b"]
    assert [c["metadata"]["name"] for c in by_kind(docs, "ClusterRole")] == ["gentask-t-gentask-operator"]


def test_label_tenants_need_the_operator_s_rules_cluster_wide_and_namespace_get():
    docs = render("--set", "tenants.label.enabled=true")
    env = env_of(one(docs, "Deployment", "operator"))
    assert env["GENTASK_WATCH_NAMESPACES"]["value"] == ""          # every namespace: a status for each task
    assert env["GENTASK_TENANT_LABEL"]["value"] == "gentask.io/tenant=enabled"
    base = [c for c in by_kind(docs, "ClusterRole") if c["metadata"]["name"] == "gentask-t-gentask-operator"][0]
    assert _rules(base)[("", "namespaces")] == ({"get", "list", "watch"}, None)
    tenants = [c for c in by_kind(docs, "ClusterRole") if c["metadata"]["name"] == "gentask-t-gentask-operator-tenants"]
    assert _rules(tenants[0]) == _rules(one(docs, "Role", "operator"))     # the same rules, cluster-wide
    api = [c for c in by_kind(docs, "ClusterRole") if c["metadata"]["name"] == "gentask-t-gentask-api-tenants"][0]
    assert _rules(api) == {("gentask.io", "generationtasks"): ({"create", "get", "list", "watch", "patch", "delete"},
                                                              None), ("", "events"): ({"list"}, None),
                           ("gentask.io", "generationquotas"): ({"get", "list"}, None)}     # a create's quota check


def test_the_credentials_secret_is_readable_by_name_when_secret_reads_are_narrowed():
    narrowed = render("--set", "tenants.namespaces={team-a}", "--set", "webhooks.secretNames={hook-key}")
    role = [r for r in by_kind(narrowed, "Role") if r["metadata"]["namespace"] == "team-a"
            and "operator" in r["metadata"]["name"]][0]
    assert _rules(role)[("", "secrets")] == ({"get"}, ("hook-key", "gentask-credentials"))
    off = render("--set", "tenants.namespaces={team-a}", "--set", "webhooks.readTaskSecrets=false")
    role = [r for r in by_kind(off, "Role") if r["metadata"]["namespace"] == "team-a"
            and "operator" in r["metadata"]["name"]][0]
    assert _rules(role)[("", "secrets")] == ({"get"}, ("gentask-credentials",))
    assert ("", "secrets") not in _rules(one(render("--set", "webhooks.readTaskSecrets=false"), "Role", "operator"))


def test_tenants_refuse_the_executors_that_share_one_set_of_keys():
    for executor in ("pool", "inline"):
        proc = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "tenants.label.enabled=true",
                    "--set", f"operator.executor={executor}", check=False)
        assert proc.returncode != 0 and "tenants need operator.executor=job" in proc.stderr, proc.stderr


def test_the_task_pods_network_policy_is_in_every_listed_tenant_namespace():
    docs = render("--set", "tenants.namespaces={team-a,team-b}", "--set", "networkPolicy.taskNamespaces={team-b,x}")
    workers = [p["metadata"]["namespace"] for p in by_kind(docs, "NetworkPolicy")
               if p["metadata"]["name"].endswith("-workers")]
    assert sorted(workers) == ["gentask-tasks", "team-a", "team-b", "x"]


def test_label_tenants_get_the_task_pods_network_policy_from_the_operator():
    """A namespace that opts in by label after the install has no policy of the chart's: the operator
    is given the chart's worker egress rules and the right to create the policy there, and nothing more."""
    import json

    from gentask.config import Settings
    docs = render("--set", "tenants.label.enabled=true")
    env = env_of(one(docs, "Deployment", "operator"))
    given = json.loads(env["GENTASK_WORKER_NETWORK_POLICY"]["value"])
    static = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("-workers")]
    assert static and all(given == {"egress": p["spec"]["egress"]} for p in static)
    setting = env["GENTASK_WORKER_NETWORK_POLICY"]["value"]
    assert Settings(worker_network_policy=setting).worker_egress == given["egress"]
    tenants = [c for c in by_kind(docs, "ClusterRole") if c["metadata"]["name"] == "gentask-t-gentask-operator-tenants"]
    assert _rules(tenants[0])[("networking.k8s.io", "networkpolicies")] == ({"create", "get"}, None)
    for args in (("--set", "tenants.namespaces={team-a}"),                       # the chart renders those
                 ("--set", "tenants.label.enabled=true", "--set", "networkPolicy.enabled=false")):
        docs = render(*args)
        assert "GENTASK_WORKER_NETWORK_POLICY" not in env_of(one(docs, "Deployment", "operator"))
        assert all(("networking.k8s.io", "networkpolicies") not in _rules(r)
                   for r in [*by_kind(docs, "Role"), *by_kind(docs, "ClusterRole")])
