"""``obflow datahub-emulator``: a local DataHub-compatible server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from obflow import ports
from obflow.cli.options import dev_tools_missing


def _datahub_emulator(args: argparse.Namespace) -> int:
    if dev_tools_missing("datahub-emulator"):
        return 2
    from obflow_dev.emulator import DataHubEmulator, Faults, serve, server_tls_context

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


def add_commands(commands: Any) -> None:
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
