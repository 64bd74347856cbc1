"""What the reconciler, the observer and the job actions share: the operator's settings, and the outcome
of a step (the status to write and the Events to post), whose phase changes go through the lifecycle
table (obflow_operator.status)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from obflow import ports
from obflow.flink_rest import FlinkRest
from obflow_operator.builders import Owner
from obflow_operator.network import NetworkPolicySettings
from obflow_operator.status import DataPipelineStatus, Phase, check_transition


@dataclass(frozen=True)
class OperatorSettings:
    # where the operator reaches a pipeline's JobManager REST API; in the cluster, its Service
    rest_url_template: str = "http://{name}-jobmanager.{namespace}.svc:" + str(ports.FLINK_REST)
    pdb_api_version: str = "policy/v1"
    rest_timeout: float = 10.0
    observe_interval: float = 10.0  # seconds between the observer's rounds
    network_policies: NetworkPolicySettings | None = None  # None: pipelines get no NetworkPolicies

    def rest(self, name: str, namespace: str, retries: int = 2) -> FlinkRest:
        url = self.rest_url_template.format(name=name, namespace=namespace)
        return FlinkRest(url, timeout=self.rest_timeout, retries=retries)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """A status to write (camelCase, for the status subresource) and events to post."""

    status: DataPipelineStatus
    events: list[Event] = field(default_factory=list)
    acted: bool = False  # it records something done (a job stopped, children applied): write it, whatever changed

    def move(self, target: Phase, reason: str, message: str, warning: bool = False) -> None:
        """Go to ``target`` (checked against the lifecycle table), with an Event when the phase changes; a
        ``warning`` is posted even when it does not (a second invalid spec is news of its own)."""
        current = self.status.phase
        check_transition(current, target)
        if current != target:
            self.events.append(
                Event("Warning" if warning else "Normal", reason, f"{current or 'New'} -> {target}: {message}")
            )
        elif warning:
            self.events.append(Event("Warning", reason, message))
        self.status.phase = target
        self.status.message = message

    def status_patch(self) -> dict[str, Any]:
        return self.status.model_dump(by_alias=True, mode="json")


def owner_of(meta: Mapping[str, Any]) -> Owner:
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def load_status(status: Mapping[str, Any] | None) -> DataPipelineStatus:
    return DataPipelineStatus.model_validate(dict(status or {}))
