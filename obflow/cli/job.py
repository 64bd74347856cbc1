"""``obflow job run``: the Flink job in a local mini-cluster."""

from __future__ import annotations

import argparse
from typing import Any

from obflow.cli.options import config_action


def _job_run(args: argparse.Namespace) -> int:
    from flink_job.job import latest_restore_point, run
    from obflow.runtime import start_component

    config = start_component("flink", args.config)
    restore = args.from_savepoint or (None if args.fresh else latest_restore_point(config))
    return run(args.config, config, restore)


def add_commands(commands: Any) -> None:
    job_run = config_action(
        commands, "job", "the Flink job", "run", "run the job in a local mini-cluster until stopped", _job_run
    )
    restore = job_run.add_mutually_exclusive_group()
    restore.add_argument(
        "--from-savepoint",
        default=None,
        help="restore from this savepoint or checkpoint (default: the newest savepoint or retained checkpoint)",
    )
    restore.add_argument("--fresh", action="store_true", help="start with empty state, ignoring earlier runs")
