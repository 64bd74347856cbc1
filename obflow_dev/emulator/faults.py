"""Injected failures, switched at start or at run time through ``/_admin/faults``; what happened to every put
(``/_admin/stats``); and the admin endpoint that serves both."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from obflow_dev.emulator.store import (
    DataHubError,
    invalid,
)

if TYPE_CHECKING:
    from obflow_dev.emulator.server import DataHubEmulator

# fault → (lowest, highest, whole number, may be null)
FAULT_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "put_request_failure_rate": (0, 1, False, False),
    "put_record_failure_rate": (0, 1, False, False),
    "put_record_max_failures": (0, 10**6, True, True),
    "fail_next_puts": (0, 10**6, True, False),
    "latency_ms": (0, 60_000, False, False),
    "seed": (-(2**63), 2**63 - 1, True, True),
}
MAX_OUTAGE_S = 3600


@dataclass
class Faults:
    """Injected failures; every field can be changed at run time through ``POST /_admin/faults``."""

    put_request_failure_rate: float = 0.0
    """Share of put requests answered with HTTP 500 InternalServerError (nothing stored)."""
    put_record_failure_rate: float = 0.0
    """Share of records in each put reported as failed (LimitExceeded), the rest stored."""
    put_record_max_failures: int | None = None
    """With a record failure rate: fail each record (same content) at most this many times."""
    fail_next_puts: int = 0
    """The next N put requests fail whole, whatever the rates."""
    latency_ms: float = 0.0
    """Added to every DataHub request."""
    seed: int | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.failures_by_record: dict[bytes, int] = {}
        self.lock = threading.Lock()

    def reject_record(self, values: list[str | None] | bytes) -> bool:
        """Whether to fail this record now, by the rate and the per-record cap."""
        if not self.put_record_failure_rate:
            return False
        with self.lock:
            if self.rng.random() >= self.put_record_failure_rate:
                return False
            if self.put_record_max_failures is None:
                return True
            content = values if isinstance(values, bytes) else orjson.dumps(values)
            digest = hashlib.blake2b(content, digest_size=16).digest()
            count = self.failures_by_record.get(digest, 0)
            if count >= self.put_record_max_failures:
                return False
            self.failures_by_record[digest] = count + 1
            return True

    def update(self, changes: Any) -> None:
        """Apply ``changes`` (fault → value) whole, or none of it: InvalidParameter naming the first fault
        of an unknown name, a wrong type or a value out of its bounds (:data:`FAULT_BOUNDS`)."""
        if not isinstance(changes, dict):
            raise invalid("the faults are a JSON object of fault names and values")
        for key, value in changes.items():
            if key not in FAULT_BOUNDS:
                raise invalid(f"unknown fault {key!r}; known: {', '.join(FAULT_BOUNDS)}")
            low, high, whole, nullable = FAULT_BOUNDS[key]
            if value is None and nullable:
                continue
            kinds = (int,) if whole else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
                kind = "a whole number" if whole else "a number"
                raise invalid(f"fault {key!r} must be {kind} from {low} to {high}{' or null' if nullable else ''}")
        for key, value in changes.items():
            setattr(self, key, value)
        if "seed" in changes:
            self.rng = random.Random(self.seed)
        self.failures_by_record.clear()

    def public(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def _admin_json(body: bytes) -> Any:
    try:
        return orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise invalid(f"the request body is not JSON: {exc}") from None


def admin(emulator: DataHubEmulator, method: str, path: str, body: bytes) -> Any:
    if path == "/healthz":
        return {"status": "ok"}
    if path == "/_admin/faults":
        if method == "POST":
            emulator.faults.update(_admin_json(body))
        return emulator.faults.public()
    if path == "/_admin/outage" and method == "POST":
        request = _admin_json(body)
        seconds = request.get("seconds", 1) if isinstance(request, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= MAX_OUTAGE_S:
            raise invalid(f"outage 'seconds' must be a number above 0 and at most {MAX_OUTAGE_S}")
        threading.Timer(0.05, emulator.refuse_connections, args=(seconds,)).start()
        return {"refusing_for": seconds}
    if path == "/_admin/stats":
        return {
            "requests": emulator.stats.requests,
            "records_stored": emulator.stats.records_stored,
            "records_read": emulator.stats.records_read,
            "puts": [asdict(p) for p in emulator.stats.puts],
        }
    raise DataHubError(404, "InvalidUriSpec", f"unknown admin resource {path!r}")


@dataclass
class PutLogEntry:
    time: float
    shard_ids: list[str]
    records: int
    failed: int
    whole_request_failed: bool


@dataclass
class Stats:
    puts: deque[PutLogEntry] = field(default_factory=lambda: deque(maxlen=10_000))
    records_stored: int = 0
    records_read: int = 0
    requests: int = 0
