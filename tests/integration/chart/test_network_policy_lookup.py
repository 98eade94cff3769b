"""The chart's NetworkPolicies against a real API server: the API server's addresses are looked up
(the `kubernetes` Service and its EndpointSlice) when `helm upgrade` renders, and the policies are
objects the API server stores as rendered.

`helm template --dry-run=server` renders as `helm install`/`upgrade` do, with `lookup` answered
by the cluster. The local cluster's CNI (none, or a bridge) enforces no policy: what they allow is
judged in tests/unit/chart/test_network_policy.py; here, that they point at this cluster.
"""

from __future__ import annotations

import uuid

import pytest
import yaml
from kubernetes import client

from tests.support.helm import CHART, KUBE_VERSION, helm
from tests.support.netpol import Address, allows_egress
from tests.unit.chart.test_network_policy import task_pod


@pytest.fixture
def namespace(cluster):
    core = client.CoreV1Api(cluster.api)
    name = f"netpol-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"gentask.io/test": "true"}}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def api_server(cluster) -> tuple[set[str], set[int], set[str], set[int]]:
    """The `kubernetes` Service's ClusterIPs and ports, its EndpointSlice's addresses and ports.

    The process node's cluster has no such EndpointSlice: its API server advertises 127.0.0.1,
    which no Endpoints may hold (the real node's cluster has one: tests/e2e/test_install.py)."""
    svc = client.CoreV1Api(cluster.api).read_namespaced_service("kubernetes", "default")
    slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes").items
    eps = [s for s in slices if s.metadata.name == "kubernetes"]
    return (set(svc.spec.cluster_ips), {p.port for p in svc.spec.ports},
            {a for s in eps for e in s.endpoints or [] for a in e.addresses},
            {p.port for s in eps for p in s.ports or []})


def test_the_api_server_is_looked_up_and_the_policies_are_valid_objects(cluster, namespace):
    out = helm("template", "t", str(CHART), "--namespace", namespace, "--dry-run=server",
               "--kube-version", KUBE_VERSION, "--set", f"taskNamespace.name={namespace}",
               "--show-only", "templates/networkpolicy.yaml", kubeconfig=cluster.kubeconfig).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert {d["metadata"]["name"] for d in docs} == {"t-gentask-api", "t-gentask-operator", "t-gentask-workers"}
    cluster_ips, service_ports, endpoints, endpoint_ports = api_server(cluster)
    expected = {f"{ip}/32" if ":" not in ip else f"{ip}/128" for ip in cluster_ips | endpoints}
    for policy in docs:
        rules = [r for r in policy["spec"]["egress"] if {p["port"] for p in r.get("ports", [])} & service_ports
                 and any("ipBlock" in t and "except" not in t["ipBlock"] for t in r.get("to", []))]
        assert len(rules) == 1, policy["spec"]["egress"]
        assert {t["ipBlock"]["cidr"] for t in rules[0]["to"]} == expected, policy["metadata"]["name"]
        assert {p["port"] for p in rules[0]["ports"]} >= service_ports | endpoint_ports
    # a task pod reaches the API server at its ClusterIP and at its endpoint, and no other private address
    pod = task_pod("img-np", "image", "default", namespace=namespace)
    for ip in cluster_ips:
        assert allows_egress(docs, pod, Address(ip), 443)
    for ip in endpoints:
        assert all(allows_egress(docs, pod, Address(ip), port) for port in endpoint_ports)
    assert not allows_egress(docs, pod, Address("10.255.255.254"), 443)

    # the API server takes them, and keeps what was rendered
    applied = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    assert applied.returncode == 0, applied.stderr
    stored = client.NetworkingV1Api(cluster.api).list_namespaced_network_policy(namespace).items
    api = client.ApiClient()
    assert {p.metadata.name: api.sanitize_for_serialization(p.spec) for p in stored} == {
        d["metadata"]["name"]: d["spec"] for d in docs}
