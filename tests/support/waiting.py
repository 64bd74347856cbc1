"""Waiting in tests: every wait is bounded, and a wait that times out says what it saw last."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 30,
    what: str = "the condition",
    interval: float = 0.1,
    not_yet: tuple[type[Exception], ...] = (),
    seen: Callable[[], Any] | None = None,
) -> Any:
    """``predicate()``'s first truthy value within ``timeout`` seconds; the errors in ``not_yet`` count as
    "not yet". On timeout an AssertionError names ``what`` and what was seen last: ``seen()`` when
    given (called once, at the end), else the predicate's last value when it says more than False."""
    deadline = time.monotonic() + timeout
    last_value: Any = None
    last_error: Exception | None = None
    while True:
        try:
            last_value = predicate()
        except not_yet as exc:
            last_value, last_error = None, exc
        if last_value:
            return last_value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    saw = []
    if seen is not None:
        try:
            saw.append(f"last seen: {seen()}")
        except Exception as exc:  # what went wrong looking is worth saying too
            saw.append(f"looking failed: {exc!r}")
    elif last_value not in (None, False):
        saw.append(f"last value: {last_value!r}")
    if last_error is not None:
        saw.append(f"last error: {last_error}")
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" ({'; '.join(saw)})" if saw else ""))
