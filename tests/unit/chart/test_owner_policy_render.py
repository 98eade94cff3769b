"""The chart's task-owner admission policy as `helm template` renders it (tests/integration/chart/
test_owner_policy.py applies it to the local cluster and creates tasks as real users)."""

from __future__ import annotations

from tests.support.helm import render
from tests.unit.chart.test_render import by_kind, one

MAP = "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy"


def test_the_policy_exempts_the_api_account_and_the_named_controllers():
    docs = render("--set", "ownership.exemptUsers={system:serviceaccount:argocd:argocd-application-controller}")
    policy = one(docs, "ValidatingAdmissionPolicy", "task-owner")
    assert policy["metadata"]["name"] == "gentask-t-gentask-task-owner"      # cluster-scoped: namespace in the name
    condition = policy["spec"]["matchConditions"][0]["expression"]
    assert '"system:serviceaccount:gentask:t-gentask-api"' in condition
    assert '"system:serviceaccount:argocd:argocd-application-controller"' in condition
    assert '["system:masters"]' in condition
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE"]
    binding = one(docs, "ValidatingAdmissionPolicyBinding", "task-owner")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    no_api = one(render("--set", "api.enabled=false"), "ValidatingAdmissionPolicy", "task-owner")
    assert "t-gentask-api" not in no_api["spec"]["matchConditions"][0]["expression"]


def test_the_mapping_and_the_namespace_selector_are_rendered():
    docs = render(values={"ownership": {"users": {"alice@example.com": "alice"},
                                        "namespaceSelector": {"matchLabels": {"team": "a"}}}})
    policy = one(docs, "ValidatingAdmissionPolicy", "task-owner")
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    assert variables["owners"] == '{"alice@example.com":"alice"}'
    binding = one(docs, "ValidatingAdmissionPolicyBinding", "task-owner")
    assert binding["spec"]["matchResources"] == {"namespaceSelector": {"matchLabels": {"team": "a"}}}


def test_defaulting_only_where_the_cluster_serves_mutating_admission_policies():
    assert not by_kind(render(), "MutatingAdmissionPolicy")           # helm template's default API versions
    docs = render("--api-versions", MAP)
    mutating = one(docs, "MutatingAdmissionPolicy", "task-owner")
    assert mutating["spec"]["mutations"][0]["applyConfiguration"]["expression"] == \
        "Object{spec: Object.spec{userID: variables.identity}}"
    assert one(docs, "MutatingAdmissionPolicyBinding", "task-owner")["spec"]["policyName"] == \
        mutating["metadata"]["name"]
    assert not by_kind(render("--api-versions", MAP, "--set", "ownership.defaultUserID=false"),
                       "MutatingAdmissionPolicy")


def test_enforce_off_renders_no_owner_policy():
    docs = render("--api-versions", MAP, "--set", "ownership.enforce=false")
    assert not [d for d in docs if "task-owner" in d["metadata"]["name"]]
