"""``obflow demo``: the whole pipeline on this machine, verified."""

from __future__ import annotations

import argparse
from typing import Any

from obflow.cli.options import dev_tools_missing
from obflow.units import parse_duration


def _demo(args: argparse.Namespace) -> int:
    if dev_tools_missing("demo"):
        return 2
    from obflow_dev.demo import run_demo

    return run_demo(
        rows=args.rows,
        rate=args.rate,
        duration=args.duration,
        fmt=args.format,
        out_dir=args.out,
        keep_running=args.keep_running,
    )


def add_commands(commands: Any) -> None:
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
