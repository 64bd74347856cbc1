"""The test cluster's DNS (Debian has no CoreDNS): answers Service and Pod names of the cluster domain
from the API server, over UDP and TCP on the node's bridge address. It forwards nothing: a name
outside the cluster domain is NXDOMAIN.

    python -m tools.cluster.dns --kubeconfig FILE --address 10.244.0.1 [--port 53]

Names answered (``A`` records; other types of a known name get an empty answer):
``SVC.NS.svc.DOMAIN`` → the ClusterIP, or the ready endpoint addresses of a headless Service;
``HOST.SVC.NS.svc.DOMAIN`` → the endpoint address with that hostname (StatefulSet pods);
``A-B-C-D.NS.pod.DOMAIN`` → A.B.C.D.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import time
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

TTL = 5


def endpoint_addresses(endpoints: Any, hostname: str | None = None) -> list[str]:
    return [
        address.ip
        for subset in endpoints.subsets or []
        for address in subset.addresses or []
        if hostname is None or address.hostname == hostname
    ]


class ClusterResolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, api: client.CoreV1Api, domain: str) -> None:
        self.api = api
        self.domain = domain.strip(".")

    def addresses(self, name: str) -> list[str] | None:
        """The addresses of a cluster name; None if the name does not exist."""
        labels = name.lower().strip(".").split(".")
        domain = self.domain.split(".")
        if labels[-len(domain) :] != domain:
            return None
        labels = labels[: -len(domain)]
        try:
            if len(labels) == 3 and labels[2] == "pod":
                ip = labels[0].replace("-", ".")
                ipaddress.IPv4Address(ip)
                return [ip]
            if len(labels) in (3, 4) and labels[-1] == "svc":
                service, namespace = labels[-3], labels[-2]
                if len(labels) == 4:
                    return endpoint_addresses(self.api.read_namespaced_endpoints(service, namespace), labels[0]) or None
                spec = self.api.read_namespaced_service(service, namespace).spec
                if spec.cluster_ip and spec.cluster_ip != "None":
                    return [spec.cluster_ip]
                return endpoint_addresses(self.api.read_namespaced_endpoints(service, namespace))
        except (ApiException, ValueError):
            return None
        return None

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname)
        addresses = self.addresses(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for address in addresses:
                reply.add_answer(RR(name, QTYPE.A, rdata=A(address), ttl=TTL))
        return reply


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("--domain", default="cluster.local")
    args = parser.parse_args()
    config.load_kube_config(args.kubeconfig)
    resolver = ClusterResolver(client.CoreV1Api(), args.domain)
    logger = DNSLogger(log="error", prefix=False)
    servers = [
        DNSServer(resolver, address=args.address, port=args.port, tcp=tcp, logger=logger) for tcp in (False, True)
    ]
    for server in servers:
        server.start_thread()
    print(f"answering {args.domain} names on {args.address}:{args.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: [server.stop() for server in servers])
    while all(server.isAlive() for server in servers):
        time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
