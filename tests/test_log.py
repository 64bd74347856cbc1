"""Structured logging: a stable event field on every fault, JSON lines, no secrets (R4.6)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from obflow.log import Fault, log_event, log_fault, register_secrets, setup_logging


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    setup_logging("DEBUG", "json", stream)
    yield stream
    setup_logging()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_every_fault_event_is_logged_with_a_stable_event_name_R4_6(json_log: io.StringIO) -> None:
    logger = logging.getLogger("obflow.test")
    for fault in Fault:
        log_fault(logger, fault, f"{fault} happened", attempt=2)
    entries = lines(json_log)
    assert [e["event"] for e in entries] == [f.value for f in Fault]
    assert all(e["fault"] is True and e["attempt"] == 2 and e["level"] == "WARNING" for e in entries)


def test_json_lines_carry_time_level_logger_and_fields(json_log: io.StringIO) -> None:
    log_event(logging.getLogger("obflow.capture"), "capture.batch_sent", "sent", records=500)
    (entry,) = lines(json_log)
    assert entry["logger"] == "obflow.capture"
    assert entry["event"] == "capture.batch_sent"
    assert entry["records"] == 500
    assert str(entry["ts"]).endswith("+00:00")


def test_registered_secrets_never_reach_a_log_line(json_log: io.StringIO) -> None:
    register_secrets(["hunter2-secret"])
    logging.getLogger("obflow.test").error(
        "connect failed with password hunter2-secret", extra={"dsn": "x:hunter2-secret@h"}
    )
    text = json_log.getvalue()
    assert "hunter2-secret" not in text
    assert "**********" in text


def test_text_format_shows_event_and_fields() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "text", stream)
    try:
        log_fault(logging.getLogger("obflow.x"), Fault.DB_CONNECTION_LOST, "lost", host="db")
    finally:
        setup_logging()
    assert "event=db.connection_lost" in stream.getvalue()
    assert "host=db" in stream.getvalue()
