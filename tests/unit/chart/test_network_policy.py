"""The chart's NetworkPolicies as a CNI that enforces them would read them: which pods each one
selects (the task pods as gentask's own Job code labels them), and which connections pass."""

from __future__ import annotations

import pytest

from gentask.config import load_settings
from gentask.domain.task import GenerationTask
from gentask.kube.jobs import job_manifest
from tests.support.helm import CHART, helm, render
from tests.support.netpol import Address, Pod, allows_egress, allows_ingress, pod_of_template, policy_selects
from tests.unit.chart.test_render import by_kind, one

RELEASE_NS, TASK_NS = "gentask", "jobs"
API_SERVER = ["10.96.0.1/32", "172.18.0.2/32"]             # the Service's ClusterIP and the endpoint
MONGO_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mongo"}},
              "podSelector": {"matchLabels": {"app": "mongodb"}}}
PRECISE = {"taskNamespace": {"name": TASK_NS},
           "networkPolicy": {"apiServer": {"cidrs": API_SERVER}, "mongodb": {"peers": [MONGO_PEER]}}}

DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
MONGO = Pod("mongo", {"app": "mongodb"})
VENDOR, VENDOR6 = Address("203.0.113.10"), Address("2606:4700::1111")
# the cloud metadata service, RFC 1918, CGNAT, loopback, unique-local and link-local IPv6
PRIVATE = [Address(ip) for ip in ("169.254.169.254", "10.0.0.5", "172.16.5.5", "192.168.1.1", "100.64.1.1",
                                  "127.0.0.1", "fd00::1", "fe80::1")]


def task_pod(name: str, kind: str, priority: str, namespace: str = TASK_NS) -> Pod:
    """The pod of a task's Job, labelled by gentask's own job manifest code."""
    task = GenerationTask.model_validate({
        "apiVersion": "gentask.io/v1alpha1", "kind": "GenerationTask",
        "metadata": {"name": name, "namespace": namespace, "uid": f"u-{name}", "resourceVersion": "1"},
        "spec": {"type": kind, "provider": "fake", "model": f"fake-{kind}", "prompt": "p", "priority": priority}})
    return pod_of_template(job_manifest(task, load_settings()))


TASK_PODS = [task_pod("img-a", "image", "critical"), task_pod("vid-b", "video", "low"),
             task_pod("txt-c", "text", "default")]


def chart_pods(docs: list[dict]) -> dict[str, Pod]:
    """component -> the pod of the chart's Deployment of it."""
    return {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: pod_of_template(d)
            for d in by_kind(docs, "Deployment")}


def policies(docs: list[dict]) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in by_kind(docs, "NetworkPolicy")}


@pytest.mark.parametrize("executor", ["job", "inline", "pool"])
def test_each_policy_selects_exactly_its_components_pods(executor: str):
    docs = render(values={**PRECISE, "operator": {"executor": executor}})
    pods = chart_pods(docs)
    assert set(pods) == {"api", "operator"} | ({"pool"} if executor == "pool" else set())
    # someone else's pods in both namespaces, one with gentask's name label
    foreign = [Pod(TASK_NS, {"app": "other"}), Pod(RELEASE_NS, {"app.kubernetes.io/name": "gentask"}),
               Pod(TASK_NS, {"app.kubernetes.io/name": "gentask", "app.kubernetes.io/component": "worker"})]
    expected = {"t-gentask-api": [pods["api"]], "t-gentask-operator": [pods["operator"]],
                "t-gentask-workers": TASK_PODS}
    if executor == "pool":
        expected["t-gentask-pool"] = [pods["pool"]]
    rendered = policies(docs)
    assert set(rendered) == set(expected)
    everyone = [*pods.values(), *TASK_PODS, *foreign]
    for name, policy in rendered.items():
        assert [p for p in everyone if policy_selects(policy, p)] == expected[name], name
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"], name
    assert rendered["t-gentask-workers"]["metadata"]["namespace"] == TASK_NS
    # every pod of gentask's is fenced in, by exactly one policy
    for pod in [*pods.values(), *TASK_PODS]:
        assert sum(policy_selects(p, pod) for p in rendered.values()) == 1, pod


def test_task_and_pool_pods_serve_nothing_and_reach_only_dns_the_api_server_mongodb_and_vendors():
    docs = render(values={**PRECISE, "operator": {"executor": "pool"}})
    rules = list(policies(docs).values())
    pool = chart_pods(docs)["pool"]
    for pod in [*TASK_PODS, pool]:
        for source in (Address("10.1.2.3"), Address("203.0.113.10"), TASK_PODS[0], chart_pods(docs)["api"]):
            for port in (80, 443, 8080, 9090):
                assert not allows_ingress(rules, pod, source, port), (pod, source, port)
        assert allows_egress(rules, pod, DNS, 53, "UDP") and allows_egress(rules, pod, DNS, 53, "TCP")
        assert not allows_egress(rules, pod, Pod("default", {"k8s-app": "kube-dns"}), 53, "UDP")
        assert allows_egress(rules, pod, Address("10.96.0.1"), 443)
        assert allows_egress(rules, pod, Address("172.18.0.2"), 6443)
        assert not allows_egress(rules, pod, Address("10.96.0.2"), 443)    # another in-cluster service
        assert allows_egress(rules, pod, MONGO, 27017)
        assert not allows_egress(rules, pod, Pod("elsewhere", {"app": "mongodb"}), 27017)
        assert not allows_egress(rules, pod, MONGO, 22)
        assert allows_egress(rules, pod, VENDOR, 443) and allows_egress(rules, pod, VENDOR6, 443)
        assert not allows_egress(rules, pod, VENDOR, 80) and not allows_egress(rules, pod, VENDOR, 25)
        for private in PRIVATE:
            for port in (80, 443):
                assert not allows_egress(rules, pod, private, port), (pod, private, port)
        # not the other components, not another task's pod
        assert not allows_egress(rules, pod, chart_pods(docs)["operator"], 9090)
        assert not allows_egress(rules, pod, TASK_PODS[1], 8080)


def test_the_api_is_reached_on_its_port_only_and_reaches_no_vendor_and_no_receiver():
    docs = render(values={**PRECISE, "api": {"port": 8181}, "webhooks": {"allow": ["10.20.0.0/16"]}})
    rules = list(policies(docs).values())
    api = chart_pods(docs)["api"]
    for source in (Address("198.51.100.7"), Pod("ingress-nginx", {"app": "ingress"}), TASK_PODS[0]):
        assert allows_ingress(rules, api, source, 8181)
        assert not allows_ingress(rules, api, source, 9090) and not allows_ingress(rules, api, source, 22)
    assert allows_egress(rules, api, DNS, 53, "UDP") and allows_egress(rules, api, MONGO, 27017)
    assert allows_egress(rules, api, Address("10.96.0.1"), 443)
    # it resolves a callback_url at create time but never connects to one; it calls no vendor
    for address in (VENDOR, VENDOR6, Address("10.20.3.4")):
        assert not allows_egress(rules, api, address, 443)
    assert not allows_egress(rules, api, TASK_PODS[0], 8080)


def test_the_api_port_can_be_narrowed_to_named_peers():
    edge = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    docs = render(values={**PRECISE, "networkPolicy": {**PRECISE["networkPolicy"], "api": {"from": [edge]}}})
    rules, api = list(policies(docs).values()), chart_pods(docs)["api"]
    assert allows_ingress(rules, api, Pod("ingress-nginx", {"app": "controller"}), 8080)
    assert not allows_ingress(rules, api, Pod("default", {"app": "curl"}), 8080)
    assert not allows_ingress(rules, api, Address("198.51.100.7"), 8080)


def test_the_operator_is_reached_on_metrics_only_and_reaches_vendors_and_public_receivers():
    docs = render(values={**PRECISE, "operator": {"metricsPort": 9123}})
    rules = list(policies(docs).values())
    operator = chart_pods(docs)["operator"]
    assert allows_ingress(rules, operator, Pod("monitoring", {"app": "prometheus"}), 9123)
    assert not allows_ingress(rules, operator, Pod("monitoring", {"app": "prometheus"}), 8080)
    assert allows_egress(rules, operator, DNS, 53, "UDP") and allows_egress(rules, operator, MONGO, 27017)
    assert allows_egress(rules, operator, Address("172.18.0.2"), 6443)
    assert allows_egress(rules, operator, VENDOR, 443) and allows_egress(rules, operator, VENDOR6, 443)
    # https receivers only (webhooks.allowHTTP false, no allowlist): no port 80, never a private address
    assert not allows_egress(rules, operator, VENDOR, 80)
    for private in PRIVATE:
        assert not allows_egress(rules, operator, private, 443), private


def test_the_receiver_allowlist_and_http_open_the_operator_to_them():
    allow = ["10.20.0.0/16", "hooks.internal", "192.168.7.7", "[fd00::7]"]
    docs = render(values={**PRECISE, "webhooks": {"allow": allow}})
    rules = list(policies(docs).values())
    operator = chart_pods(docs)["operator"]
    assert allows_egress(rules, operator, Address("10.20.3.4"), 8443)        # a CIDR, any port
    assert allows_egress(rules, operator, Address("192.168.7.7"), 9000)      # an address
    assert allows_egress(rules, operator, Address("fd00::7"), 443)
    assert not allows_egress(rules, operator, Address("192.168.7.8"), 443)
    assert not allows_egress(rules, operator, Address("169.254.169.254"), 80)
    assert allows_egress(rules, operator, VENDOR, 80)        # allowlisted hosts may use http
    for pod in TASK_PODS:                                    # task pods send no webhooks
        assert not allows_egress(rules, pod, Address("10.20.3.4"), 8443)
    http = render(values={**PRECISE, "webhooks": {"allowHTTP": True}})
    assert allows_egress(list(policies(http).values()), chart_pods(http)["operator"], VENDOR, 80)


def test_without_cidrs_and_a_cluster_to_ask_the_api_server_and_mongodb_are_open_on_their_ports_only():
    """`helm template` cannot look the API server up: the documented fallback is its ports, anywhere."""
    docs = render("--set", f"taskNamespace.name={TASK_NS}")
    rules = list(policies(docs).values())
    for pod in [*TASK_PODS, *chart_pods(docs).values()]:
        assert allows_egress(rules, pod, Address("10.0.0.1"), 6443)
        assert allows_egress(rules, pod, Address("10.0.0.1"), 443)
        assert allows_egress(rules, pod, Address("10.44.0.9"), 27017)
        assert not allows_egress(rules, pod, Address("10.0.0.1"), 8080)
        assert not allows_egress(rules, pod, Address("169.254.169.254"), 80)


def test_vendor_ranges_and_extra_rules_are_configurable():
    gateway = {"to": [{"ipBlock": {"cidr": "10.50.0.0/24"}}], "ports": [{"port": 8443, "protocol": "TCP"}]}
    docs = render(values={**PRECISE, "networkPolicy": {
        **PRECISE["networkPolicy"], "vendors": {"ipBlocks": [{"cidr": "198.51.100.0/24"}], "ports": [443, 8443]},
        "extraEgress": {"workers": [gateway]}, "dns": {"cidrs": ["169.254.20.10/32"]}}})
    rules = list(policies(docs).values())
    for pod in TASK_PODS:
        assert allows_egress(rules, pod, Address("198.51.100.3"), 8443)
        assert not allows_egress(rules, pod, VENDOR, 443)
        assert allows_egress(rules, pod, Address("10.50.0.7"), 8443)
        assert allows_egress(rules, pod, Address("169.254.20.10"), 53, "UDP")   # NodeLocal DNSCache
    assert not allows_egress(rules, chart_pods(docs)["api"], Address("10.50.0.7"), 8443)


def test_the_task_pods_policy_is_rendered_in_every_task_namespace():
    docs = render("--set", f"taskNamespace.name={TASK_NS}",
                  "--set", "networkPolicy.taskNamespaces={team-a,team-b,jobs}")
    workers = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "t-gentask-workers"]
    assert sorted(p["metadata"]["namespace"] for p in workers) == ["jobs", "team-a", "team-b"]
    pod = task_pod("img-z", "image", "default", namespace="team-b")
    assert [p["metadata"]["namespace"] for p in workers if policy_selects(p, pod)] == ["team-b"]


def test_disabled_renders_no_policy_and_the_schema_refuses_bad_values():
    assert not by_kind(render("--set", "networkPolicy.enabled=false"), "NetworkPolicy")
    assert {p["metadata"]["name"] for p in by_kind(render("--set", "api.enabled=false"), "NetworkPolicy")} == {
        "t-gentask-operator", "t-gentask-workers"}
    for bad in (["--set", "networkPolicy.apiServer.ports={0}"], ["--set", "networkPolicy.vendors.ipBlocks=null"],
                ["--set", "networkPolicy.mongodb.peers[0].pods=x"], ["--set", "networkPolicy.taskNamespaces={Bad_NS}"],
                ["--set", "networkPolicy.unknown=1"]):
        proc = helm("template", "t", str(CHART), "--kube-version", "1.36.3", *bad, check=False)
        assert proc.returncode != 0 and "schema" in proc.stderr, f"{bad} was accepted:\n{proc.stderr}"


def test_the_policies_say_what_they_are():
    docs = render()
    workers = one(docs, "NetworkPolicy", "workers")
    assert workers["metadata"]["annotations"]["kube-score/ignore"] == "networkpolicy-targets-pod"
    assert "ingress" not in workers["spec"]
