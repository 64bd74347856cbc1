"""Human-friendly durations (``300s``, ``5m``, ``1h30m``) and sizes (``512MiB``, ``1GiB``).

Both parse into plain numbers (seconds as ``float``, bytes as ``int``) and format back into the
shortest exact text, so a config written out by ``obflow config show`` reads like the one typed in.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
MAX_DURATION_S = 3650 * 86400.0
MAX_SIZE = 1024**5  # 1 PiB
DURATION_HINT = "a duration such as 500ms, 30s, 5m, 1h or 1h30m (a bare number means seconds)"

_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
SIZE_HINT = "a size such as 4096, 512KiB, 64MiB, 1GiB or 1GB (a bare number means bytes)"


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: a number of seconds or text like ``5m``; raises ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
                raise ValueError(f"expected {DURATION_HINT}")
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"expected {DURATION_HINT}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not seconds <= MAX_DURATION_S:  # NaN too
        raise ValueError(f"a duration may be at most {format_duration(MAX_DURATION_S)} (ten years)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact text for ``seconds``: 300 -> ``5m``, 5400 -> ``1h30m``, 0.25 -> ``250ms``."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis % 1000:
        return f"{millis}ms"
    rest = millis // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            out += f"{count}{unit}"
    return out


def parse_size(value: Any) -> int:
    """Bytes in ``value``: a number of bytes or text like ``512MiB``; raises ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HINT}")
    amount: int | float
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.strip().lower())
        if not match or match.group(2) not in {"", *_SIZE_UNITS}:
            raise ValueError(f"expected {SIZE_HINT}")
        amount = float(match.group(1)) * _SIZE_UNITS.get(match.group(2) or "b", 1)
    else:
        raise ValueError(f"expected {SIZE_HINT}")
    if amount < 0:
        raise ValueError("a size cannot be negative")
    if not amount <= MAX_SIZE:  # an overflow to infinity too
        raise ValueError(f"a size may be at most {format_size(MAX_SIZE)}")
    return int(amount)


def format_size(size: int) -> str:
    """The shortest exact binary-unit text for ``size``: 1073741824 -> ``1GiB``."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""A duration in seconds, written in config as ``5m`` and the like."""

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str, when_used="json"),
]
"""A size in bytes, written in config as ``1GiB`` and the like."""
