"""What obflow's images run: the entry point of the Python images and every image's health check.

``obflow-container [ARGS]`` is ``obflow ARGS``; without ARGS it runs the image's component
(``OBFLOW_COMMAND``: ``capture``, ``operator`` or ``datahub-emulator``), so ``docker run obflow/capture`` just works and
Kubernetes or Compose can pass their own arguments.

``obflow-healthcheck`` (Docker's ``HEALTHCHECK``) asks the process running as PID 1 what it is and
probes that component's own endpoint: the capture agent's ``/readyz``, the operator's ``/healthz``,
the DataHub emulator's ``/healthz``, a JobManager's REST API, a TaskManager's metrics reporter.
``OBFLOW_HEALTH_URL`` overrides the choice. Exit 0 when the endpoint answers 2xx, else 1.

``python -m obflow.container flink-config SRC DST`` writes the Flink image's configuration: SRC's
config.yaml (a mounted one, or Flink's stock one), flattened to dotted keys, with the
``FLINK_PROPERTIES`` lines (``key: value``) applied over it, as DST/config.yaml.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obflow import ports

DEFAULT_ARGS = {
    "capture": ["capture", "run"],
    "operator": ["operator", "run"],
    "datahub-emulator": ["datahub-emulator", "--host", "0.0.0.0", "--data-dir", "/var/lib/obflow/datahub"],
}


def main(argv: Sequence[str] | None = None) -> int:
    from obflow.cli import main as obflow_main

    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        command = os.environ.get("OBFLOW_COMMAND", "")
        if command not in DEFAULT_ARGS:
            sys.stderr.write(f"obflow-container: no arguments, and OBFLOW_COMMAND={command!r} names no component\n")
            return 2
        args = DEFAULT_ARGS[command]
    return obflow_main(args)


def flat_flink_config(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flink's nested YAML configuration as dotted keys (``jobmanager: {rpc: {port: 6123}}`` →
    ``jobmanager.rpc.port: 6123``); lists and scalars are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_flink_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def write_flink_config(source: Path, target: Path, properties: str) -> dict[str, Any]:
    """``source``'s config.yaml flattened, with ``properties`` (YAML ``key: value`` lines) over it."""
    import yaml

    base = yaml.safe_load((source / "config.yaml").read_text()) or {}
    overrides = yaml.safe_load(properties) if properties.strip() else {}
    if not isinstance(overrides, dict):
        raise ValueError(f"FLINK_PROPERTIES: expected 'key: value' lines, got {properties!r}")
    config = {**flat_flink_config(base), **flat_flink_config(overrides)}
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True, width=1_000_000))
    return config


def _option(args: Sequence[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in ``args``."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def health_url(pid1_args: Sequence[str], env: dict[str, str]) -> str:
    """The endpoint that says whether the component running as PID 1 is healthy."""
    if env.get("OBFLOW_HEALTH_URL"):
        return env["OBFLOW_HEALTH_URL"]
    joined = " ".join(pid1_args)
    if "TaskManagerRunner" in joined:
        return f"http://127.0.0.1:{ports.FLINK_METRICS}/metrics"
    if "org.apache.flink" in joined:  # a JobManager (session or application cluster)
        return f"http://127.0.0.1:{ports.FLINK_REST}/config"
    component = next(
        (name for name in ("datahub-emulator", "operator", "capture") if name in pid1_args),
        env.get("OBFLOW_COMMAND", "capture"),  # started without arguments: the image's own component
    )
    if component == "datahub-emulator":
        return f"http://127.0.0.1:{_option(pid1_args, '--port') or ports.DATAHUB_EMULATOR}/healthz"
    if component == "operator":
        return f"http://127.0.0.1:{_option(pid1_args, '--liveness-port') or ports.OPERATOR_LIVENESS}/healthz"
    return f"http://127.0.0.1:{env.get('OBFLOW_CAPTURE__HTTP_PORT') or ports.CAPTURE_HTTP}/readyz"


def healthcheck() -> int:
    try:
        pid1_args = [a.decode() for a in Path("/proc/1/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        pid1_args = []
    url = health_url(pid1_args, dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            ok = 200 <= response.status < 300
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    print(f"{'healthy' if ok else 'unhealthy'}: {url}")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["flink-config"] and len(sys.argv) == 4:
        write_flink_config(Path(sys.argv[2]), Path(sys.argv[3]), os.environ.get("FLINK_PROPERTIES", ""))
        sys.exit(0)
    sys.exit(main())
