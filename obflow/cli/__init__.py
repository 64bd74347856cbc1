"""The ``obflow`` command line: it parses arguments and calls into the packages, nothing more. One module per
command group; each adds its commands with ``add_commands``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import version

from obflow.cli import capture, config, demo, dlq, emulator, job, operator, output
from obflow.cli.options import Handler

COMMAND_GROUPS = (config, emulator, capture, job, dlq, output, demo, operator)

DESCRIPTION = (
    "obflow: change data capture from OceanBase (or MariaDB/MySQL) through Alibaba Cloud DataHub and "
    "Apache Flink into exactly-once JSON, Parquet or CSV files."
)

EPILOG = (
    "Start with `obflow demo` (the whole pipeline on this machine) or `obflow config validate FILE`; "
    "`obflow COMMAND --help` describes each command. Every command reads the same configuration file, "
    "overridden by OBFLOW_<SECTION>__<KEY> environment variables."
)


def _version(args: argparse.Namespace) -> int:
    print(f"obflow {version('obflow')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obflow", description=DESCRIPTION, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    commands.add_parser("version", help="print the version").set_defaults(handler=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
