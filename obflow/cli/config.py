"""``obflow config``: validate a configuration file or show the effective one."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from obflow.config import ConfigError, env_overrides, load_config, redacted_dump


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


def add_commands(commands: Any) -> None:

    config = commands.add_parser("config", help="validate or show a configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    validate = config_commands.add_parser("validate", help="exit 0 if FILE (plus OBFLOW_* env) is valid")
    validate.add_argument("file")
    validate.set_defaults(handler=_config_validate)
    show = config_commands.add_parser("show", help="print the effective config, secrets redacted")
    show.add_argument("file")
    show.set_defaults(handler=_config_show)
