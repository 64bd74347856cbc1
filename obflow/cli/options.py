"""What several command groups share: the ``--config`` option, the ``GROUP ACTION --config FILE`` shape, and
the check that the development tooling (``obflow_dev``) is installed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="configuration file; without it: defaults overridden by OBFLOW_* environment variables (R8.6)",
    )


def config_action(commands: Any, group: str, group_help: str, action: str, action_help: str, handler: Any) -> Any:
    """``obflow GROUP ACTION --config F``; returns ACTION's parser for more arguments."""
    parser = commands.add_parser(group, help=group_help)
    actions = parser.add_subparsers(dest=f"{group}_command", required=True, metavar="ACTION")
    action_parser = actions.add_parser(action, help=action_help)
    add_config_option(action_parser)
    action_parser.set_defaults(handler=handler)
    return action_parser


def dev_tools_missing(command: str) -> bool:
    """True, with the reason on stderr, where ``obflow_dev`` (local tooling no product image installs) is absent."""
    if importlib.util.find_spec("obflow_dev") is not None:
        return False
    print(f"obflow {command}: a development command, and this installation has no obflow_dev (the product images "
          "leave it out): run it from a checkout after `make setup`, or run the DataHub emulator from the "
          "obflow/datahub-emulator image", file=sys.stderr)  # fmt: skip
    return True
