"""``obflow capture``: install, uninstall, ddl, resnapshot and run the capture agent."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from obflow.cli.options import add_config_option


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


def add_commands(commands: Any) -> None:
    capture = commands.add_parser("capture", help="capture database changes to DataHub")
    capture_commands = capture.add_subparsers(dest="capture_command", required=True, metavar="ACTION")
    for action, text in (("install", "create change logs and triggers"), ("uninstall", "remove them")):
        ddl = capture_commands.add_parser(action, help=text)
        add_config_option(ddl)
        ddl.add_argument("--print", action="store_true", help="print the DDL instead of applying it")
        ddl.set_defaults(handler=_capture_ddl)
    schema = capture_commands.add_parser(
        "ddl", help="apply an ALTER TABLE of a captured table without failing a write or missing a change"
    )
    add_config_option(schema)
    schema.add_argument("statement", help='the DDL, e.g. "ALTER TABLE orders DROP COLUMN note"')
    schema.set_defaults(handler=_capture_schema_change)
    resnapshot = capture_commands.add_parser(
        "resnapshot", help="ask the running agent to re-read one table (op=r), after every change before it"
    )
    add_config_option(resnapshot)
    resnapshot.add_argument("table", help="a table of source.tables, e.g. orders or SHOP.ORDERS")
    resnapshot.set_defaults(handler=_capture_resnapshot)
    run = capture_commands.add_parser("run", help="run the capture agent until SIGTERM")
    add_config_option(run)
    run.set_defaults(handler=_capture_run)
