"""The ``obflow`` command line: it parses arguments and calls into the packages, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import yaml

from obflow import ports
from obflow.config import ConfigError, env_overrides, load_config, redacted_dump
from obflow.units import parse_duration

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = (
    "obflow: change data capture from OceanBase (or MariaDB/MySQL) through Alibaba Cloud DataHub and "
    "Apache Flink into exactly-once JSON, Parquet or CSV files."
)
EPILOG = (
    "Start with `obflow demo` (the whole pipeline on this machine) or `obflow config validate FILE`; "
    "`obflow COMMAND --help` describes each command. Every command reads the same configuration file, "
    "overridden by OBFLOW_<SECTION>__<KEY> environment variables."
)


def _config_validate(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.file}: valid")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"# effective configuration: defaults < {args.file} < environment; secrets redacted")
    print(yaml.safe_dump(redacted_dump(config), sort_keys=False).rstrip())
    overrides = env_overrides()
    if overrides:
        print("# values from the environment:")
        for key, var in sorted(overrides.items()):
            print(f"#   {key} <- {var}")
    return 0


def _version(args: argparse.Namespace) -> int:
    print(f"obflow {version('obflow')}")
    return 0


def _datahub_emulator(args: argparse.Namespace) -> int:
    from obflow.datahub.emulator import DataHubEmulator, Faults, serve, server_tls_context

    if (args.tls_cert is None) != (args.tls_key is None):
        print("datahub-emulator: --tls-cert and --tls-key go together (the certificate chain and its key, PEM)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        tls = server_tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        print(f"datahub-emulator: cannot serve TLS with --tls-cert {args.tls_cert} --tls-key {args.tls_key}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    faults = Faults(
        put_request_failure_rate=args.put_request_failure_rate,
        put_record_failure_rate=args.put_record_failure_rate,
        latency_ms=args.latency_ms,
        seed=args.seed,
    )
    emulator = DataHubEmulator(
        args.data_dir,
        args.host,
        args.port,
        args.access_id,
        args.access_key,
        faults=faults,
        fsync=args.fsync,
        admin=args.admin,
        tls=tls,
    )
    return serve(emulator)


def _capture_ddl(args: argparse.Namespace) -> int:
    from capture_agent.db import DRIVER_OR_NETWORK_ERRORS
    from capture_agent.dialects import script
    from capture_agent.install import apply_ddl, apply_ddl_guard, apply_install, change_log_plan, ddl_guard_ddl
    from capture_agent.method import dialect_of
    from capture_agent.privileges import describe
    from obflow.runtime import start_component

    config = start_component("capture", args.config)
    remove = args.capture_command == "uninstall"
    try:
        plan = change_log_plan(config, remove=remove, offline_ok=args.print)
    except Exception as exc:
        print(f"obflow capture {args.capture_command}: {describe(exc, config.source)}", file=sys.stderr)
        return 2
    for table in plan.tables:
        if table.skipped:
            print(f"warning: {table.qualified}: {', '.join(table.skipped)} (LONG) cannot be named by a row trigger "
                  "and is left out of the change images", file=sys.stderr)  # fmt: skip
    guard = [] if remove else ddl_guard_ddl(config)
    if args.print:
        if plan.offline_because:
            print(f"-- from the columns in {args.config}: the database could not be reached ({plan.offline_because}); "
                  "the capture agent brings the triggers to the catalog's shape at its first poll")  # fmt: skip
        print(script(dialect_of(config), plan.statements), end="")
        if guard:
            print("\n-- optional: rejects an ALTER TABLE that would invalidate a capture trigger (needs DDL triggers)")
            print(script(dialect_of(config), guard), end="")
        return 0
    try:
        if remove:
            apply_ddl(config, plan.statements)
        else:
            apply_install(config, plan)
    except DRIVER_OR_NETWORK_ERRORS as exc:
        print(f"obflow capture {args.capture_command}: {describe(exc, config.source)}", file=sys.stderr)
        return 1
    verb = "removed from" if remove else "installed on"
    print(f"change capture {verb} {len(config.source.tables)} table(s) ({len(plan.statements)} statements)")
    if guard:
        refused = apply_ddl_guard(config)
        if refused:
            print(f"warning: the DDL guard was not created ({refused}): an ALTER TABLE that drops, renames or retypes "
                  "a captured column fails the table's writes until the agent replaces its trigger (one poll); apply "
                  "such DDL with `obflow capture ddl`", file=sys.stderr)  # fmt: skip
        else:
            print("DDL guard created: ALTER TABLE that would break a capture trigger names `obflow capture ddl`")
    return 0


def _capture_resnapshot(args: argparse.Namespace) -> int:
    from capture_agent.state import ResnapshotRequests
    from obflow.config import load_config

    try:
        config = load_config(args.config)
    except Exception as exc:
        print(f"obflow capture resnapshot: {exc}", file=sys.stderr)
        return 2
    source = config.source
    wanted = args.table if "." in args.table else f"{source.database}.{args.table}"
    tables = [".".join(source.schema_and_table(table)) for table in source.tables]
    if wanted not in tables:
        print(f"obflow capture resnapshot: {wanted} is not in source.tables ({', '.join(tables)})", file=sys.stderr)
        return 2
    request = ResnapshotRequests(config.capture.state_dir).add(wanted)
    print(f"re-snapshot of {wanted} requested ({request.id}): the agent using {config.capture.state_dir} reads it "
          "at its next poll, after every change before it")  # fmt: skip
    return 0


def _capture_schema_change(args: argparse.Namespace) -> int:
    from capture_agent.db import DRIVER_ERRORS
    from capture_agent.install import SchemaChangeError, apply_schema_change
    from obflow.runtime import start_component

    config = start_component("capture", args.config)
    try:
        table = apply_schema_change(config, args.statement)
    except SchemaChangeError as exc:
        print(f"obflow capture ddl: {exc}", file=sys.stderr)
        return 2
    except DRIVER_ERRORS as exc:
        print(f"obflow capture ddl: the database refused it ({exc.args[-1]}); capture is as before", file=sys.stderr)
        return 1
    print(f"applied to {table.qualified} with its change capture kept: {', '.join(c.name for c in table.columns)}")
    return 0


def _capture_run(args: argparse.Namespace) -> int:
    from capture_agent.agent import run_agent
    from obflow.runtime import start_component

    return run_agent(start_component("capture", args.config))


def _job_run(args: argparse.Namespace) -> int:
    from flink_job.job import latest_restore_point, run
    from obflow.runtime import start_component

    config = start_component("flink", args.config)
    restore = args.from_savepoint or (None if args.fresh else latest_restore_point(config))
    return run(args.config, config, restore)


def _dlq_read(args: argparse.Namespace) -> int:
    from obflow.deadletter import DeadLetterQueue
    from obflow.runtime import start_component

    count = 0
    for letter in DeadLetterQueue(start_component("dlq", args.config)).read():
        sys.stdout.buffer.write(letter.to_json() + b"\n")
        count += 1
    sys.stdout.flush()
    print(f"{count} dead letters", file=sys.stderr)
    return 0


def _output_show(args: argparse.Namespace) -> int:
    import orjson

    from flink_job.output import read_output
    from obflow.runtime import start_component

    config = start_component("output", args.config)
    shown = 0
    for table, file, rows in read_output(config):
        if args.table and table.rpartition(".")[2].lower() != args.table.rpartition(".")[2].lower():
            continue
        for row in rows:
            if shown >= args.limit:
                return 0
            line = orjson.dumps({"_table": table, "_file": file.name, **row}, default=str)
            sys.stdout.buffer.write(line + b"\n")
            shown += 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from obflow.demo import run_demo

    return run_demo(
        rows=args.rows,
        rate=args.rate,
        duration=args.duration,
        fmt=args.format,
        out_dir=args.out,
        keep_running=args.keep_running,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obflow", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_config_commands(commands)
    _add_emulator_commands(commands)
    _add_capture_commands(commands)
    _add_job_commands(commands)
    _add_dlq_commands(commands)
    _add_output_commands(commands)
    _add_demo_commands(commands)
    _add_operator_commands(commands)
    commands.add_parser("version", help="print the version").set_defaults(handler=_version)
    return parser


def _add_config_commands(commands: Any) -> None:

    config = commands.add_parser("config", help="validate or show a configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    validate = config_commands.add_parser("validate", help="exit 0 if FILE (plus OBFLOW_* env) is valid")
    validate.add_argument("file")
    validate.set_defaults(handler=_config_validate)
    show = config_commands.add_parser("show", help="print the effective config, secrets redacted")
    show.add_argument("file")
    show.set_defaults(handler=_config_show)


def _add_emulator_commands(commands: Any) -> None:
    emulator = commands.add_parser(
        "datahub-emulator",
        help="run a local DataHub-compatible server",
        description="A DataHub-compatible endpoint the unmodified pydatahub SDK talks to (JSON and PB). "
        "With --admin, faults can also be switched at run time: POST /_admin/faults, POST /_admin/outage.",
    )
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=ports.DATAHUB_EMULATOR, help="0 picks a free port")
    emulator.add_argument("--data-dir", required=True, help="where records and offsets are kept")
    emulator.add_argument("--access-id", default="obflow")
    emulator.add_argument("--access-key", default="obflow-local-key")
    emulator.add_argument("--fsync", action="store_true", help="fsync every put (survives machine crashes)")
    emulator.add_argument("--put-request-failure-rate", type=float, default=0.0, metavar="P")
    emulator.add_argument("--put-record-failure-rate", type=float, default=0.0, metavar="P")
    emulator.add_argument("--latency-ms", type=float, default=0.0)
    emulator.add_argument("--seed", type=int, default=None, help="seed of the injected failures")
    emulator.add_argument(
        "--admin",
        action="store_true",
        help="serve /_admin/ (faults, outages, put statistics), unauthenticated, to anything that reaches the port",
    )
    emulator.add_argument("--tls-cert", metavar="PEM", help="serve https with this certificate chain (with --tls-key)")
    emulator.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    emulator.set_defaults(handler=_datahub_emulator)


def _add_capture_commands(commands: Any) -> None:
    capture = commands.add_parser("capture", help="capture database changes to DataHub")
    capture_commands = capture.add_subparsers(dest="capture_command", required=True, metavar="ACTION")
    for action, text in (("install", "create change logs and triggers"), ("uninstall", "remove them")):
        ddl = capture_commands.add_parser(action, help=text)
        _add_config_option(ddl)
        ddl.add_argument("--print", action="store_true", help="print the DDL instead of applying it")
        ddl.set_defaults(handler=_capture_ddl)
    schema = capture_commands.add_parser(
        "ddl", help="apply an ALTER TABLE of a captured table without failing a write or missing a change"
    )
    _add_config_option(schema)
    schema.add_argument("statement", help='the DDL, e.g. "ALTER TABLE orders DROP COLUMN note"')
    schema.set_defaults(handler=_capture_schema_change)
    resnapshot = capture_commands.add_parser(
        "resnapshot", help="ask the running agent to re-read one table (op=r), after every change before it"
    )
    _add_config_option(resnapshot)
    resnapshot.add_argument("table", help="a table of source.tables, e.g. orders or SHOP.ORDERS")
    resnapshot.set_defaults(handler=_capture_resnapshot)
    run = capture_commands.add_parser("run", help="run the capture agent until SIGTERM")
    _add_config_option(run)
    run.set_defaults(handler=_capture_run)


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="configuration file; without it: defaults overridden by OBFLOW_* environment variables (R8.6)",
    )


def _config_action(commands: Any, group: str, group_help: str, action: str, action_help: str, handler: Any) -> Any:
    """``obflow GROUP ACTION --config F``; returns ACTION's parser for more arguments."""
    parser = commands.add_parser(group, help=group_help)
    actions = parser.add_subparsers(dest=f"{group}_command", required=True, metavar="ACTION")
    action_parser = actions.add_parser(action, help=action_help)
    _add_config_option(action_parser)
    action_parser.set_defaults(handler=handler)
    return action_parser


def _add_job_commands(commands: Any) -> None:
    job_run = _config_action(
        commands, "job", "the Flink job", "run", "run the job in a local mini-cluster until stopped", _job_run
    )
    restore = job_run.add_mutually_exclusive_group()
    restore.add_argument(
        "--from-savepoint",
        default=None,
        help="restore from this savepoint or checkpoint (default: the newest savepoint or retained checkpoint)",
    )
    restore.add_argument("--fresh", action="store_true", help="start with empty state, ignoring earlier runs")


def _add_dlq_commands(commands: Any) -> None:
    help_text = "print every dead letter (DataHub topic, then files) as JSON lines"
    _config_action(commands, "dlq", "the dead-letter queue", "read", help_text, _dlq_read)


def _add_output_commands(commands: Any) -> None:
    help_text = "print committed rows as JSON lines, any format"
    show_rows = _config_action(commands, "output", "the committed output files", "show", help_text, _output_show)
    show_rows.add_argument("--table", default=None, help="only this table")
    show_rows.add_argument("--limit", type=int, default=20)


def _add_demo_commands(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline locally on embedded defaults and verify it",
        description="seekdb -> capture agent -> DataHub emulator -> PyFlink job -> files, with a load "
        "generator, a live view and a final check of every change against the database's history.",
    )
    demo.add_argument("--rows", type=int, default=3000, help="changes to write (default 3000)")
    demo.add_argument("--rate", type=float, default=100.0, help="changes per second (default 100)")
    demo.add_argument("--duration", type=parse_duration, default=None, help="stop writing after this long")
    demo.add_argument("--format", choices=["json", "parquet", "csv"], default="parquet")
    demo.add_argument("--out", default=None, help="working directory (default: demo-output/<time>)")
    demo.add_argument("--keep-running", action="store_true", help="leave the pipeline up until Ctrl-C")
    demo.set_defaults(handler=_demo)


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


def _add_operator_commands(commands: Any) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
