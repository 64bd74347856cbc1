"""Kubernetes NetworkPolicy semantics, for checking rendered policies: may traffic go from one
endpoint to another on a port? (No network plugin that enforces NetworkPolicies runs on this machine,
so the rendered policies are read by this model of the rules in the Kubernetes documentation.)"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (``namespace`` set) or an address outside the cluster (``namespace`` None)."""

    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def pod(ip: str, namespace: str, **labels: str) -> Endpoint:
        return Endpoint(ip, namespace, labels, {"kubernetes.io/metadata.name": namespace})


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector; the empty one selects everything."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        excluded = any(address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])
        return address in ipaddress.ip_network(block["cidr"]) and not excluded
    if other.namespace is None:  # selectors select pods only
        return False
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        namespace_ok = other.namespace == policy_namespace
    return namespace_ok and selects(peer.get("podSelector") or {}, other.labels)


def _rule_allows(
    rule: Mapping[str, Any], peers_key: str, namespace: str, other: Endpoint, port: int, protocol: str
) -> bool:
    ports = rule.get("ports")
    port_ok = not ports or any(
        p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] == port) for p in ports
    )
    peers = rule.get(peers_key)
    return port_ok and (not peers or any(_peer_matches(peer, namespace, other) for peer in peers))


def _side_allows(
    policies: list[dict[str, Any]], pod: Endpoint, direction: str, other: Endpoint, port: int, protocol: str
) -> bool:
    """Does ``pod``'s side allow it: not isolated in ``direction``, or some rule of a policy that
    selects it allows ``other`` on ``port``?"""
    if pod.namespace is None:
        return True  # outside the cluster: no policy applies
    peers_key = "from" if direction == "Ingress" else "to"
    isolating = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == pod.namespace
        and selects(policy["spec"]["podSelector"], pod.labels)
        and direction in policy["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    return any(
        _rule_allows(rule, peers_key, policy["metadata"]["namespace"], other, port, protocol)
        for policy in isolating
        for rule in policy["spec"].get(direction.lower()) or []
    )


def allowed(
    policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """May ``source`` open a connection to ``target`` on ``port``: the source's egress and the target's
    ingress both allow it."""
    return _side_allows(policies, source, "Egress", target, port, protocol) and _side_allows(
        policies, target, "Ingress", source, port, protocol
    )
