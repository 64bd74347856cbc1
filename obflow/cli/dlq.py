"""``obflow dlq read``: every dead letter as a JSON line."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from obflow.cli.options import config_action


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


def add_commands(commands: Any) -> None:
    help_text = "print every dead letter (DataHub topic, then files) as JSON lines"
    config_action(commands, "dlq", "the dead-letter queue", "read", help_text, _dlq_read)
