"""The ``obflow`` command line: it parses arguments and calls into the packages, nothing more."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version

import yaml

from obflow.config import ConfigError, env_overrides, load_config, redacted_dump

Handler = Callable[[argparse.Namespace], int]


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


def _demo(args: argparse.Namespace) -> int:
    from obflow.demo import run_demo

    return run_demo(rows=args.rows, shards=args.shards, out_dir=args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="obflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = commands.add_parser("config", help="validate or show a configuration file")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    validate = config_commands.add_parser("validate", help="exit 0 if FILE (plus OBFLOW_* env) is valid")
    validate.add_argument("file")
    validate.set_defaults(handler=_config_validate)
    show = config_commands.add_parser("show", help="print the effective config, secrets redacted")
    show.add_argument("file")
    show.set_defaults(handler=_config_show)

    demo = commands.add_parser("demo", help="run the pipeline end to end on embedded defaults")
    demo.add_argument("--rows", type=int, default=2000, help="changes to send through (default 2000)")
    demo.add_argument("--shards", type=int, default=4, help="DataHub shards (default 4)")
    demo.add_argument("--out", default=None, help="working directory (default: a new temporary one)")
    demo.set_defaults(handler=_demo)

    commands.add_parser("version", help="print the version").set_defaults(handler=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
