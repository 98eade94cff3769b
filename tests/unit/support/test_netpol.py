"""The NetworkPolicy semantics the chart tests judge rendered policies with (tests/support/netpol.py)."""

from __future__ import annotations

import pytest

from tests.support.netpol import Address, Pod, allows_egress, allows_ingress, policy_selects, selects


def test_selectors_and_matchlabels_with_matchexpressions():
    labels = {"app": "web", "tier": "front"}
    assert selects({}, labels) and not selects(None, labels)
    assert selects({"matchLabels": {"app": "web"}}, labels)
    assert not selects({"matchLabels": {"app": "web", "tier": "back"}}, labels)
    assert selects({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "mid"]}]}, labels)
    assert not selects({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, labels)
    assert selects({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert selects({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, labels)
    assert not selects({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, labels)
    # matchLabels and matchExpressions are ANDed
    assert not selects({"matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)
    with pytest.raises(ValueError, match="operator"):
        selects({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, labels)


POLICY = {"metadata": {"namespace": "prod"}, "spec": {
    "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"ports": [{"port": 8080, "protocol": "TCP"}],
                 "from": [{"namespaceSelector": {"matchLabels": {"team": "edge"}},
                           "podSelector": {"matchLabels": {"app": "proxy"}}}]}],
    "egress": [{"ports": [{"port": 53, "protocol": "UDP"}],
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
               {"ports": [{"port": 443, "protocol": "TCP"}],
                "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]},
               {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}}
WEB = Pod("prod", {"app": "web"})


def test_a_policy_selects_pods_of_its_namespace_only():
    assert policy_selects(POLICY, WEB)
    assert not policy_selects(POLICY, Pod("dev", {"app": "web"}))
    assert not policy_selects(POLICY, Pod("prod", {"app": "db"}))
    # a pod no policy selects is open both ways
    other = Pod("prod", {"app": "db"})
    assert allows_egress([POLICY], other, Address("10.1.1.1"), 22) and allows_ingress([POLICY], other, WEB, 1)


def test_peers_ports_and_ipblocks():
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    assert allows_egress([POLICY], WEB, dns, 53, "UDP")
    assert not allows_egress([POLICY], WEB, dns, 53, "TCP")
    assert not allows_egress([POLICY], WEB, Pod("other", {"k8s-app": "kube-dns"}), 53, "UDP")
    assert allows_egress([POLICY], WEB, Address("8.8.8.8"), 443)
    assert not allows_egress([POLICY], WEB, Address("10.2.3.4"), 443)         # except
    assert not allows_egress([POLICY], WEB, Address("8.8.8.8"), 80)
    assert not allows_egress([POLICY], WEB, Address("2001:db8::1"), 443)      # not in an IPv4 block
    # a podSelector alone: pods of the policy's namespace, any port (no ports listed)
    assert allows_egress([POLICY], WEB, Pod("prod", {"app": "db"}), 5432)
    assert not allows_egress([POLICY], WEB, Pod("dev", {"app": "db"}), 5432)
    # pods are never matched by an ipBlock, addresses never by a pod peer
    assert not allows_egress([POLICY], WEB, Pod("x", {}), 443)
    proxy = Pod("gw", {"app": "proxy"}, namespace_labels={"team": "edge"})
    assert allows_ingress([POLICY], WEB, proxy, 8080)
    assert not allows_ingress([POLICY], WEB, proxy, 8081)
    assert not allows_ingress([POLICY], WEB, Pod("gw", {"app": "proxy"}), 8080)    # namespace not labelled
    assert not allows_ingress([POLICY], WEB, Address("1.2.3.4"), 8080)


def test_policies_add_up_and_an_isolated_direction_with_no_rule_is_closed():
    closed = {"metadata": {"namespace": "prod"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    assert not allows_ingress([closed], WEB, Pod("prod", {}), 8080)
    assert not allows_egress([closed], WEB, Address("8.8.8.8"), 443)
    assert allows_egress([closed, POLICY], WEB, Address("8.8.8.8"), 443)     # the union
    open_ports = {"metadata": {"namespace": "prod"}, "spec": {
        "podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 27017}]}]}}
    assert allows_egress([open_ports], WEB, Address("10.9.9.9"), 27017) and allows_egress([open_ports], WEB, WEB, 27017)
    assert not allows_egress([open_ports], WEB, Address("10.9.9.9"), 27018)
    assert allows_ingress([open_ports], WEB, Address("1.1.1.1"), 1)           # Egress only: ingress open
