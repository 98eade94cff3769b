"""Kubernetes label selectors and NetworkPolicy semantics, for tests of rendered policies.

What a CNI that enforces policies decides, as networking.k8s.io/v1 defines it: a pod selected by
no policy of a direction is open in that direction; a pod selected by one or more is open only to
what one of their rules allows (the union). A rule's empty `to`/`from` means every peer, its empty
`ports` every port. A peer with a podSelector alone means pods of the policy's namespace; with a
namespaceSelector, pods of the namespaces it selects (and the podSelector, when both are given);
an ipBlock, the addresses of its CIDR but its excepts. Pods are matched by labels (a peer that
names pods does not match an address) and addresses by ipBlocks only: how a CNI treats an ipBlock
that holds pod IPs is implementation-defined, so the tests never rely on it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions, ANDed) matches these labels.

    An empty selector matches everything; a missing one (None) matches nothing."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {op!r}")
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Pod:
    """A pod as a policy sees it: its namespace (and that namespace's labels) and its labels."""

    namespace: str
    labels: dict[str, str]
    name: str = ""
    namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


@dataclass(frozen=True)
class Address:
    """An address outside the cluster's pods (a vendor, the API server's endpoint, a database)."""

    ip: str


Peer = Pod | Address


def policy_selects(policy: dict[str, Any], pod: Pod) -> bool:
    return policy["metadata"]["namespace"] == pod.namespace and selects(policy["spec"]["podSelector"], pod.labels)


def _peer_matches(entry: dict[str, Any], policy_namespace: str, peer: Peer) -> bool:
    if "ipBlock" in entry:
        if not isinstance(peer, Address):
            return False
        ip = ipaddress.ip_address(peer.ip)
        block = ipaddress.ip_network(entry["ipBlock"]["cidr"], strict=False)
        if ip.version != block.version or ip not in block:
            return False
        return not any(ip in ipaddress.ip_network(e, strict=False) for e in entry["ipBlock"].get("except") or []
                       if ipaddress.ip_network(e, strict=False).version == ip.version)
    if not isinstance(peer, Pod):
        return False
    if "namespaceSelector" in entry:
        if not selects(entry["namespaceSelector"], peer.ns_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(entry.get("podSelector", {}), peer.labels)


def _port_matches(ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if not isinstance(p["port"], int):
            raise ValueError(f"named port {p['port']!r}: the tests use numbers")
        if p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _direction(policies: list[dict[str, Any]], pod: Pod, kind: str) -> list[dict[str, Any]] | None:
    """The rules of `kind` (Ingress or Egress) that apply to the pod; None when no policy isolates it."""
    key = kind.lower()
    isolating = [p for p in policies if policy_selects(p, pod) and
                 kind in p["spec"].get("policyTypes", ["Ingress"] + (["Egress"] if "egress" in p["spec"] else []))]
    if not isolating:
        return None
    return [rule for p in isolating for rule in p["spec"].get(key) or []]


def allows_egress(policies: list[dict[str, Any]], pod: Pod, to: Peer, port: int, protocol: str = "TCP") -> bool:
    """May `pod` open a connection to `to` on port/protocol, under these policies?"""
    rules = _direction(policies, pod, "Egress")
    if rules is None:
        return True
    return any(_port_matches(r.get("ports"), port, protocol) and
               (not r.get("to") or any(_peer_matches(e, pod.namespace, to) for e in r["to"])) for r in rules)


def allows_ingress(policies: list[dict[str, Any]], pod: Pod, source: Peer, port: int, protocol: str = "TCP") -> bool:
    """May `source` open a connection to `pod` on port/protocol, under these policies?"""
    rules = _direction(policies, pod, "Ingress")
    if rules is None:
        return True
    return any(_port_matches(r.get("ports"), port, protocol) and
               (not r.get("from") or any(_peer_matches(e, pod.namespace, source) for e in r["from"])) for r in rules)


def pod_of_template(obj: dict[str, Any], namespace_labels: dict[str, str] | None = None) -> Pod:
    """The pod a Deployment or Job makes (its template's labels, in the object's namespace)."""
    meta = obj["metadata"]
    return Pod(meta["namespace"], dict(obj["spec"]["template"]["metadata"].get("labels") or {}),
               name=f"{obj['kind']}/{meta['name']}", namespace_labels=namespace_labels or {})
