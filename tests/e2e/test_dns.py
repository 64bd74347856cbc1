"""The test cluster's DNS responder (tools/cluster/dns.py) against the real API server: real UDP
queries, answers made from real Services and Endpoints. Runs wherever the operator tests run, so the
responder is checked even where the whole cluster cannot start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from dnslib.server import DNSLogger, DNSServer
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.dynamic import DynamicClient

from obflow.net import free_port
from tools.cluster.controlplane import ControlPlane
from tools.cluster.dns import ClusterResolver


@pytest.fixture
def dns_port(control_plane: ControlPlane) -> Iterator[int]:
    api = client.CoreV1Api(kube_config.new_client_from_config(config_file=str(control_plane.kubeconfig)))
    port = free_port()
    server = DNSServer(ClusterResolver(api, "cluster.local"), address="127.0.0.1", port=port,
                       logger=DNSLogger(log="error", prefix=False))  # fmt: skip
    server.start_thread()
    try:
        yield port
    finally:
        server.stop()


def ask(port: int, name: str, qtype: str = "A") -> Any:
    return DNSRecord.parse(DNSRecord.question(name, qtype).send("127.0.0.1", port, timeout=5))


def addresses(reply: Any) -> list[str]:
    return sorted(str(answer.rdata) for answer in reply.rr if answer.rtype == QTYPE.A)


def test_service_and_pod_names_resolve_from_the_api_server(kube: DynamicClient, namespace: str, dns_port: int) -> None:
    services = kube.resources.get(api_version="v1", kind="Service")
    database = services.create(namespace=namespace, body={
        "metadata": {"name": "database"},
        "spec": {"ports": [{"port": 2881, "protocol": "TCP"}], "selector": {"app": "database"}},
    })  # fmt: skip
    services.create(namespace=namespace, body={
        "metadata": {"name": "flink"},
        "spec": {"clusterIP": "None", "ports": [{"port": 6123, "protocol": "TCP"}]},
    })  # fmt: skip
    kube.resources.get(api_version="v1", kind="Endpoints").create(namespace=namespace, body={
        "metadata": {"name": "flink"},
        "subsets": [{"addresses": [{"ip": "10.244.0.7", "hostname": "jm-0"}, {"ip": "10.244.0.8", "hostname": "jm-1"}],
                     "ports": [{"port": 6123, "protocol": "TCP"}]}],
    })  # fmt: skip

    assert addresses(ask(dns_port, f"database.{namespace}.svc.cluster.local")) == [database.spec.clusterIP]
    assert addresses(ask(dns_port, f"flink.{namespace}.svc.cluster.local.")) == ["10.244.0.7", "10.244.0.8"]
    assert addresses(ask(dns_port, f"jm-1.flink.{namespace}.svc.cluster.local")) == ["10.244.0.8"]
    assert addresses(ask(dns_port, f"10-244-0-9.{namespace}.pod.cluster.local")) == ["10.244.0.9"]
    known_aaaa = ask(dns_port, f"database.{namespace}.svc.cluster.local", "AAAA")
    assert known_aaaa.header.rcode == RCODE.NOERROR and not known_aaaa.rr


@pytest.mark.parametrize("name", ["missing.{ns}.svc.cluster.local", "database.{ns}.svc.cluster.local.example.com",
                                  "example.com", "300-1-1-1.{ns}.pod.cluster.local"])  # fmt: skip
def test_other_names_are_nxdomain_nothing_is_forwarded(namespace: str, dns_port: int, name: str) -> None:
    assert ask(dns_port, name.format(ns=namespace)).header.rcode == RCODE.NXDOMAIN
