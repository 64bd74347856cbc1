"""``obflow operator``: run the Kubernetes operator, render a pipeline's children, print the CRD."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from obflow import ports


def _operator_run(args: argparse.Namespace) -> int:
    from obflow.log import setup_logging
    from obflow_operator.main import run_operator
    from obflow_operator.outcome import OperatorSettings

    setup_logging(args.log_level, "json" if args.log_json else "text")
    settings = OperatorSettings(
        rest_url_template=args.flink_rest_url,
        observe_interval=args.observe_interval,
        network_policies=args.network_policies,
    )
    run_operator(args.namespace or [], args.metrics_port, args.liveness_port, settings)
    return 0


def _operator_render(args: argparse.Namespace) -> int:
    from obflow.config import bounded_yaml
    from obflow_operator.main import dump_all, render

    try:
        manifests = list(render(bounded_yaml(args.file, all_documents=True), args.namespace, args.network_policies))
    except ValueError as exc:  # the file refused (UnreadableYamlError) or a pipeline's (SpecError)
        print(f"obflow operator render: {args.file}: {exc}", file=sys.stderr)
        return 2
    if not manifests:
        print(f"obflow operator render: no DataPipeline in {args.file}", file=sys.stderr)
        return 2
    print(dump_all(manifests), end="")
    return 0


def _operator_crd(args: argparse.Namespace) -> int:
    from obflow_operator.crd import crd_yaml

    print(crd_yaml(), end="")
    return 0


def _network_policy_settings(text: str) -> Any:
    """``--network-policies``' JSON, or an argparse error (exit 2) naming each bad setting."""
    from obflow_operator.network import parse_network_policy_settings

    try:
        return parse_network_policy_settings(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


NETWORK_POLICIES_HELP = (
    "give every pipeline NetworkPolicies that allow only its flows; JSON with operatorNamespace and "
    "operatorLabels (the operator pod's), optional metricsFrom, restFrom, apiServerPorts, apiServerCidrs, "
    "extraEgress (docs/operator.md)"
)


def add_commands(commands: Any) -> None:
    operator = commands.add_parser("operator", help="the Kubernetes operator for DataPipeline resources")
    actions = operator.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="reconcile DataPipelines until stopped (kopf)")
    run.add_argument("--namespace", action="append", help="watch this namespace (repeatable; default: every namespace)")
    run.add_argument(
        "--metrics-port", type=int, default=ports.OPERATOR_METRICS, help="Prometheus /metrics port (0: off)"
    )
    run.add_argument("--liveness-port", type=int, default=ports.OPERATOR_LIVENESS, help="/healthz port (0: off)")
    run.add_argument(
        "--flink-rest-url",
        default="http://{name}-jobmanager.{namespace}.svc:" + str(ports.FLINK_REST),
        help="how to reach a pipeline's JobManager REST API ({name}, {namespace} are filled in)",
    )
    run.add_argument(
        "--observe-interval",
        type=float,
        default=10.0,
        help="seconds between looks at each pipeline's job (status, lag, autoscaler samples, rollout timeouts)",
    )
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument("--log-json", action="store_true", help="log JSON lines")
    run.add_argument("--network-policies", type=_network_policy_settings, metavar="JSON", help=NETWORK_POLICIES_HELP)
    run.set_defaults(handler=_operator_run)
    render = actions.add_parser("render", help="print every child manifest the operator would apply (dry run)")
    render.add_argument("-f", "--file", required=True, help="YAML file with DataPipeline documents")
    render.add_argument("--namespace", default="default", help="for pipelines without metadata.namespace")
    render.add_argument("--network-policies", type=_network_policy_settings, metavar="JSON", help="as for operator run")
    render.set_defaults(handler=_operator_render)
    actions.add_parser("crd", help="print the DataPipeline CustomResourceDefinition").set_defaults(
        handler=_operator_crd
    )
