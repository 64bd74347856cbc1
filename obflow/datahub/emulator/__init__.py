"""A local DataHub-compatible server (like LocalStack for AWS): ``obflow datahub-emulator``."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from obflow.datahub.emulator.server import DataHubEmulator, Faults

__all__ = ["DataHubEmulator", "Faults", "serve"]


def serve(emulator: DataHubEmulator) -> int:
    """Run ``emulator`` in the foreground until SIGTERM or SIGINT; prints the endpoint when ready."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    emulator.start()
    print(f"DataHub emulator ready at {emulator.endpoint} (data in {emulator.store.data_dir})", flush=True)
    try:
        signal.pause() if hasattr(signal, "pause") else emulator.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emulator.stop()
    print("DataHub emulator stopped", file=sys.stderr, flush=True)
    return 0
