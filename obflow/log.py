"""One logging setup for every component: text or JSON lines, a stable ``event`` field, no secrets.

Log a fault with :func:`log_fault` and a :class:`Fault` name (R4.6): the ``event`` field is what
alerts, dashboards and tests match on, so the names here are a contract — add, never rename.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, TextIO

import orjson

# kopf attaches its settings and the object reference to every record it logs
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "settings", "k8s_skip"}
_REDACTED = "**********"


class Fault(StrEnum):
    """Every fault event any component logs."""

    CONFIG_INVALID = "config.invalid"
    DB_CONNECTION_LOST = "db.connection_lost"
    DB_RECONNECT_FAILED = "db.reconnect_failed"
    DB_RECONNECTED = "db.reconnected"
    CAPTURE_GAP_EXPIRED = "capture.gap_expired"
    CAPTURE_WRITES_FAILED = "capture.writes_failed"
    CAPTURE_TABLE_GONE = "capture.table_gone"
    CAPTURE_CHANGE_UNREADABLE = "capture.change_unreadable"
    CAPTURE_RESNAPSHOT_REFUSED = "capture.resnapshot_refused"
    DATAHUB_PUT_FAILED = "datahub.put_failed"
    DATAHUB_RETRIES_EXHAUSTED = "datahub.retries_exhausted"
    DATAHUB_UNREACHABLE = "datahub.unreachable"
    DATAHUB_RECORDS_EXPIRED = "datahub.records_expired"
    RECORD_DEAD_LETTERED = "record.dead_lettered"
    FILE_WRITE_FAILED = "file.write_failed"
    CHECKPOINT_FAILED = "checkpoint.failed"
    JOB_RESTARTED = "job.restarted"
    JOB_STATUS_UNAVAILABLE = "job.status_unavailable"
    INCONSISTENCY_DETECTED = "consistency.mismatch"
    COMPONENT_CRASHED = "component.crashed"


class _SecretFilter(logging.Filter):
    """Replaces every registered secret value in a record's final text."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _REDACTED)
        return text


_secret_filter = _SecretFilter()


def register_secrets(values: Iterable[str]) -> None:
    """Never let these values reach a log line, whoever formats them."""
    _secret_filter.secrets.update(v for v in values if len(v) >= 4)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, message, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRS and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        text = orjson.dumps(entry, default=str).decode("utf-8")
        return _secret_filter.redact(text)


class TextFormatter(logging.Formatter):
    """Human-readable lines; the event name and extra fields follow the message as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return _secret_filter.redact(text)


def setup_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process; calling again replaces the previous setup."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_obflow", False):
            root.removeHandler(old)
    handler._obflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # pydatahub logs every error response at ERROR before raising it, expected ones too ("already
    # exists"); obflow handles each exception and logs its own fault event, so only theirs is kept
    logging.getLogger("datahub.rest").setLevel(logging.CRITICAL)


def log_event(logger: logging.Logger, event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with a stable ``event`` name and structured fields."""
    logger.log(level, message, extra={"event": event, **fields})


def log_fault(logger: logging.Logger, fault: Fault, message: str, level: int = logging.WARNING, **fields: Any) -> None:
    """Log a fault event (R4.6): always carries ``event=<fault name>`` and ``fault=True``."""
    logger.log(level, message, extra={"event": fault.value, "fault": True, **fields})
