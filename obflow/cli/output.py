"""``obflow output show``: committed rows of the output files as JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from obflow.cli.options import config_action


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


def add_commands(commands: Any) -> None:
    help_text = "print committed rows as JSON lines, any format"
    show_rows = config_action(commands, "output", "the committed output files", "show", help_text, _output_show)
    show_rows.add_argument("--table", default=None, help="only this table")
    show_rows.add_argument("--limit", type=int, default=20)
