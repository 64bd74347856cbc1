"""The operator's NetworkPolicy settings. The policies themselves are built with the other children
(``builders.build_network_policies``): each pod of a pipeline may send and receive only the traffic
the pipeline needs.

With ``obflow operator run --network-policies '<json>'`` (the chart's ``networkPolicy.enabled``) every
pipeline gets three NetworkPolicies, one per component, each isolating its pods for ingress and egress:

======================  ===========================================  ==========================================
pods                    may receive                                  may send
======================  ===========================================  ==========================================
JobManagers             REST from the operator (and ``restFrom``);   DNS; the API server (Flink's Kubernetes
                        anything from the pipeline's own Flink       HA); the pipeline's own Flink pods;
                        pods; metrics from ``metricsFrom``           DataHub (the runner checks the topic)
TaskManagers            anything from the pipeline's own Flink       DNS; the API server; the pipeline's own
                        pods; metrics from ``metricsFrom``           Flink pods; DataHub
capture agent           health and metrics from ``metricsFrom``      DNS; the database; DataHub
======================  ===========================================  ==========================================

"Anything" between a pipeline's Flink pods because their RPC ports are the kernel's choice (see
``builders.ANY_RPC_PORT``); another pipeline's pods, even in the same namespace, get nothing. The
database and DataHub are reached on their port, at their address when the spec gives an IP address
(a host name may resolve anywhere, so then on any address). Checkpoints in object storage, a proxy
or anything else outside these flows: ``extraEgress`` rules, added to every policy.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from obflow.problems import field_problems

Port = Annotated[int, Field(ge=1, le=65535)]
_PEER_KEYS = {"podSelector", "namespaceSelector", "ipBlock"}


def _check_peers(peers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for peer in peers:
        selectors_ok = all(isinstance(peer[key], dict) for key in peer.keys() & {"podSelector", "namespaceSelector"})
        block = peer.get("ipBlock")
        block_ok = block is None or (isinstance(block, dict) and _is_cidr(block.get("cidr")) and len(peer) == 1)
        if not peer or set(peer) - _PEER_KEYS or not selectors_ok or not block_ok:
            raise ValueError(
                f"{json.dumps(peer)[:80]} is not a NetworkPolicy peer; give podSelector and/or namespaceSelector "
                "(label selectors), or ipBlock alone (with a cidr)"
            )
    return peers


def _is_cidr(text: Any) -> bool:
    try:
        ipaddress.ip_network(text)
    except (TypeError, ValueError):
        return False
    return True


class NetworkPolicySettings(BaseModel):
    """The operator's NetworkPolicy settings: what a pipeline's policies need to know of the cluster."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    operator_namespace: str = Field(min_length=1, max_length=63, description="The operator's namespace.")
    operator_labels: dict[str, str] = Field(min_length=1, description="Labels that select the operator's pod.")
    metrics_from: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"namespaceSelector": {}}],
        description="Peers that may scrape metrics and health ports; default any pod of the cluster.",
    )
    rest_from: list[dict[str, Any]] = Field(
        default_factory=list, description="Peers besides the operator that may reach the JobManagers' REST API."
    )
    api_server_ports: list[Port] = Field(default_factory=lambda: [443, 6443], min_length=1)
    api_server_cidrs: list[str] = Field(default_factory=list, description="Default: the API server at any address.")
    extra_egress: list[dict[str, Any]] = Field(default_factory=list, description="Egress rules added to every policy.")

    _peers = field_validator("metrics_from", "rest_from")(_check_peers)

    @field_validator("api_server_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            if not _is_cidr(cidr):
                raise ValueError(f"{cidr[:60]!r} is not a CIDR such as 10.96.0.1/32")
        return cidrs

    @field_validator("extra_egress")
    @classmethod
    def _egress_rules(cls, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for rule in rules:
            if not rule or set(rule) - {"to", "ports"} or not isinstance(rule.get("to", []), list):
                raise ValueError(f"{json.dumps(rule)[:80]} is not an egress rule; give 'to' (a list of peers), 'ports'")
            _check_peers(rule.get("to", []))
        return rules


def parse_network_policy_settings(text: str) -> NetworkPolicySettings:
    """The settings in ``text`` (JSON); a ValueError names each bad field and what it takes."""
    try:
        return NetworkPolicySettings.model_validate_json(text)
    except ValidationError as exc:
        problems = field_problems(exc, NetworkPolicySettings)
        raise ValueError(
            "; ".join(f"{problem.key() or '(the document)'}: {problem.message}" for problem in problems)
        ) from None
