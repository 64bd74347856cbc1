"""Helpers shared by the benchmarks."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}"
