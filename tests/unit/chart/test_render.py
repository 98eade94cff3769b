"""The chart before it is installed: lint, the values schema and what the templates render."""

from __future__ import annotations

import yaml

from tests.support.helm import CHART, CRD_NAME, ROOT, helm, render

SECRET_KEYS = {"MONGO_URL", "ARK_API_KEY", "VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY", "OPENAI_API_KEY",
               "GENTASK_API_KEYS", "GENTASK_API_LINK_KEYS"}


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name_part: str = "") -> dict:
    found = [d for d in by_kind(docs, kind) if name_part in d["metadata"]["name"]]
    assert len(found) == 1, f"expected one {kind} named *{name_part}*, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def env_of(deployment: dict) -> dict[str, dict]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container["env"]}


def test_helm_lint_passes_with_defaults_and_with_every_switch_flipped():
    helm("lint", str(CHART), "--strict", "--kube-version", "1.36.3")
    flipped = ["--set", "crds.enabled=false", "--set", "priorityClasses.create=false", "--set",
               "taskNamespace.create=false", "--set", "api.enabled=false", "--set", "crds.keep=false",
               "--set", "workerPolicy.create=false"]
    helm("lint", str(CHART), "--strict", "--kube-version", "1.36.3", *flipped)


def test_schema_refuses_unknown_keys_and_bad_values():
    for bad in (["--set", "unknownKey=1"], ["--set", "operator.replicas=2"],
                ["--set", "priorityClasses.preemptionPolicy=Sometimes"], ["--set", "api.port=0"],
                ["--set", "taskNamespace.name=Not_A_Namespace"], ["--set", "config.providers={acme}"]):
        proc = helm("template", "t", str(CHART), "--kube-version", "1.36.3", *bad, check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, f"{bad} was accepted:\n{proc.stderr}"


def test_crd_is_the_generated_one_behind_enabled_with_a_keep_switch():
    generated = yaml.safe_load((ROOT / "crds" / f"{CRD_NAME}.yaml").read_text())
    crd = one(render(), "CustomResourceDefinition", CRD_NAME)
    assert crd["spec"] == generated["spec"], "the chart's CRD differs from crds/ (make crds regenerates both)"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "annotations" not in one(render("--set", "crds.keep=false"), "CustomResourceDefinition",
                                    CRD_NAME)["metadata"]
    assert not by_kind(render("--set", "crds.enabled=false"), "CustomResourceDefinition")


def test_the_quota_crd_is_the_generated_one_too_and_the_operator_may_count_quotas():
    generated = yaml.safe_load((ROOT / "crds" / "generationquotas.gentask.io.yaml").read_text())
    docs = render()
    crd = one(docs, "CustomResourceDefinition", "generationquotas")
    assert crd["spec"] == generated["spec"], "the chart's quota CRD differs from crds/ (make crds)"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    rules = [r for d in by_kind(docs, "Role") if "operator" in d["metadata"]["name"] for r in d["rules"]]
    assert {"apiGroups": ["gentask.io"], "resources": ["generationquotas"], "verbs": ["get", "list", "watch"]} in rules
    assert {"apiGroups": ["gentask.io"], "resources": ["generationquotas/status"], "verbs": ["get", "patch"]} in rules


def test_the_worker_admission_policy_is_the_one_in_crds_behind_a_switch():
    expected = list(yaml.safe_load_all((ROOT / "crds" / "gentask-worker-policy.yaml").read_text()))
    docs = render()
    policy = one(docs, "ValidatingAdmissionPolicy", "worker")
    binding = one(docs, "ValidatingAdmissionPolicyBinding", "worker")
    assert [policy, binding] == expected
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    off = render("--set", "workerPolicy.create=false")
    assert not [d for d in by_kind(off, "ValidatingAdmissionPolicy") + by_kind(off, "ValidatingAdmissionPolicyBinding")
                if "worker" in d["metadata"]["name"]]


def test_priority_classes_default_to_never_preempt_and_are_configurable():
    classes = {p["metadata"]["name"]: p for p in by_kind(render(), "PriorityClass")}
    assert set(classes) == {"gentask-critical", "gentask-default", "gentask-low"}
    assert {p["preemptionPolicy"] for p in classes.values()} == {"Never"}
    assert classes["gentask-critical"]["value"] > classes["gentask-default"]["value"] > classes["gentask-low"]["value"]
    custom = {p["metadata"]["name"]: p for p in by_kind(render(
        "--set", "priorityClasses.critical.value=5000",
        "--set", "priorityClasses.critical.preemptionPolicy=PreemptLowerPriority"),
        "PriorityClass")}
    assert custom["gentask-critical"]["value"] == 5000
    assert custom["gentask-critical"]["preemptionPolicy"] == "PreemptLowerPriority"
    assert custom["gentask-low"]["preemptionPolicy"] == "Never"
    assert not by_kind(render("--set", "priorityClasses.create=false"), "PriorityClass")


def test_every_pod_is_restricted_with_a_read_only_root_and_a_tmp_volume():
    deployments = by_kind(render(), "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"t-gentask-operator", "t-gentask-api"}
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]


def test_operator_runs_one_replica_recreate_with_its_settings():
    docs = render("--set", "taskNamespace.name=jobs", "--set", "operator.metricsPort=9123",
                  "--set", "image.tag=1.2.3")
    op = one(docs, "Deployment", "operator")
    assert op["spec"]["replicas"] == 1 and op["spec"]["strategy"] == {"type": "Recreate"}
    container = op["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["operator"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9123, "protocol": "TCP"}]
    env = env_of(op)
    assert env["GENTASK_NAMESPACE"]["value"] == "jobs" and env["GENTASK_WATCH_NAMESPACES"]["value"] == "jobs"
    assert env["GENTASK_WORKER_IMAGE"]["value"] == container["image"] == "ghcr.io/gentask/gentask:1.2.3"
    assert env["GENTASK_METRICS_PORT"]["value"] == "9123"
    assert env["GENTASK_CREDENTIALS_SECRET"]["value"] == "gentask-credentials"
    assert env["MONGO_URL"]["valueFrom"]["secretKeyRef"] == {"name": "gentask-credentials", "key": "MONGO_URL"}


def test_api_deployment_and_service():
    docs = render("--set", "api.replicas=3", "--set", "api.port=8181", "--set", "api.auth.existingSecret=keys")
    api = one(docs, "Deployment", "api")
    assert api["spec"]["replicas"] == 3
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["api"]
    env = env_of(api)
    assert env["PORT"]["value"] == "8181"
    assert env["GENTASK_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "keys", "key": "GENTASK_API_KEYS"}
    svc = one(docs, "Service", "api")
    assert svc["spec"]["selector"] == api["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert not [d for d in render("--set", "api.enabled=false") if "api" in d["metadata"]["name"]]


def test_secrets_only_by_reference_never_as_values():
    docs = render("--set", "api.auth.existingSecret=keys", "--set", "api.links.existingSecret=links")
    # the one Secret then made holds no value given to it: the random webhook signing key
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret")] == ["t-gentask-webhook-signing-key"]
    assert not by_kind(docs, "ConfigMap")
    # the link keys' Secret too holds a key the chart generates, never one from values (test_links_render)
    made = render("--set", "api.auth.existingSecret=keys")
    assert sorted(s["metadata"]["name"] for s in by_kind(made, "Secret")) == [
        "t-gentask-api-links", "t-gentask-webhook-signing-key"]
    for dep in by_kind(docs, "Deployment"):
        for name, entry in env_of(dep).items():
            if name in SECRET_KEYS:
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], f"{name} is not a secretKeyRef"
    # The API holds no provider keys; the operator holds them (vendor-side cancel, inline executor).
    assert "OPENAI_API_KEY" not in env_of(one(docs, "Deployment", "api"))
    assert env_of(one(docs, "Deployment", "operator"))["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"]


def test_rbac_is_least_privilege():
    docs = render("--set", "taskNamespace.name=jobs")
    cluster_role = one(docs, "ClusterRole")
    assert {(tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in cluster_role["rules"]} == {
        (("apiextensions.k8s.io",), ("customresourcedefinitions",), ("get", "list", "watch")),
        (("",), ("namespaces",), ("list", "watch"))}
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "Role")}
    assert {r["metadata"]["namespace"] for r in roles.values()} == {"jobs"}
    operator = {(r["apiGroups"][0], res): set(r["verbs"]) for r in roles["t-gentask-operator"]["rules"]
                for res in r["resources"]}
    assert operator == {
        ("gentask.io", "generationtasks"): {"get", "list", "watch", "patch", "delete"},
        ("gentask.io", "generationtasks/status"): {"get", "patch"},
        ("gentask.io", "generationquotas"): {"get", "list", "watch"},       # counted and enforced
        ("gentask.io", "generationquotas/status"): {"get", "patch"},        # the counts, for kubectl get gq
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
        ("", "serviceaccounts"): {"create", "get"},
        ("rbac.authorization.k8s.io", "roles"): {"create", "get"},
        ("rbac.authorization.k8s.io", "rolebindings"): {"create", "get"},
        ("", "events"): {"create", "patch"},
        ("", "secrets"): {"get"}}         # spec.notify.secretRef: a task's webhook signing key
    api = roles["t-gentask-api"]["rules"]
    assert api == [{"apiGroups": ["gentask.io"], "resources": ["generationtasks"],
                    "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
                   {"apiGroups": ["gentask.io"], "resources": ["generationquotas"], "verbs": ["get", "list"]},
                   {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]}]   # a task's timeline
    for binding in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        assert [s["namespace"] for s in binding["subjects"]] == ["gentask"]


def test_task_namespace_enforces_restricted_behind_a_flag():
    ns = one(render("--set", "taskNamespace.name=jobs"), "Namespace")
    assert ns["metadata"]["name"] == "jobs"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert not by_kind(render("--set", "taskNamespace.create=false"), "Namespace")


def test_service_monitor_is_optional_and_scrapes_both_components():
    assert not by_kind(render(), "ServiceMonitor")
    refused = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "--set", "serviceMonitor.enabled=true",
                   check=False)
    assert refused.returncode != 0 and "monitoring.coreos.com" in refused.stderr
    docs = render("--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1")
    monitor = one(docs, "ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics", "http"]
    selected = [s for s in by_kind(docs, "Service") if all(
        s["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
    assert {p["name"] for s in selected for p in s["spec"]["ports"]} == {"metrics", "http"}


def test_price_overrides_reach_every_component_as_gentask_prices_and_bad_ones_are_refused(tmp_path):
    import json

    from gentask.config import load_settings

    overrides = {"volcengine/doubao-seedream-4-0-250828": {"perImage": "0.18", "source": "our contract"}}
    docs = render(values={"pricing": {"overrides": overrides}, "operator": {"executor": "pool"}}, tmp=tmp_path)
    for name in ("operator", "api", "pool"):
        env = env_of(one(docs, "Deployment", name))
        assert json.loads(env["GENTASK_PRICES"]["value"]) == overrides, name
        # what the chart writes, the settings take
        table = load_settings(prices=env["GENTASK_PRICES"]["value"]).price_table()
        assert str(table.get("volcengine", "doubao-seedream-4-0-250828").per_image) == "0.18"
    assert "GENTASK_PRICES" not in env_of(one(render(), "Deployment", "operator"))     # none by default
    for bad in ({"acme": {"perImage": "1"}}, {"fake/fake-image": {"perImage": 0.1}},
                {"fake/fake-image": {"perPicture": "1"}}):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"pricing": {"overrides": bad}}))
        proc = helm("template", "t", str(CHART), "--kube-version", "1.36.3", "-f", str(path), check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, f"{bad} was accepted:\n{proc.stderr}"
