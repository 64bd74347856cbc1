"""Parquet and CSV output: an idempotent conversion of the job's committed JSON-lines part files.

Flink's Parquet writer needs jars this project cannot ship, and Python functions get no
checkpoint-complete hook, so the job always writes JSON lines through Flink's exactly-once FileSink
and, for ``output.format`` parquet or csv, a converter turns every *committed* part file (in-progress
and pending files start with a dot and are never touched) into one output file:

1. ``part.jsonl`` → write ``.part.parquet.tmp``, flush and fsync it;
2. rename it to ``part.parquet`` (atomic; the name is derived from the input, so a repeat overwrites);
3. only then delete ``part.jsonl``.

A crash between any two steps leaves either the input (converted again, to the same name) or the
output (complete): every committed change ends up in exactly one visible output file (R9.2).
See docs/design/exactly-once.md.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from obflow.events import canonical_json
from obflow.log import Fault, log_fault

log = logging.getLogger("obflow.flink.convert")

Format = Literal["parquet", "csv"]

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("op", pa.string()),
        ("schema", pa.string()),
        ("table", pa.string()),
        ("position", pa.string()),
        ("txid", pa.string()),
        ("commit_ts_ms", pa.int64()),
        ("ts_ms", pa.int64()),
        ("key", pa.string()),
        ("before", pa.string()),
        ("after", pa.string()),
    ]
)
"""One row per change; key and row images as canonical JSON text (typed per-table columns: issue 5)."""


def rows_of(lines: list[bytes]) -> pa.Table:
    """The envelopes of JSON lines as a table with :data:`SCHEMA`."""
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for line in lines:
        event = orjson.loads(line)
        source = event["source"]
        columns["event_id"].append(event["event_id"])
        columns["op"].append(event["op"])
        columns["schema"].append(source["schema"])
        columns["table"].append(source["table"])
        columns["position"].append(source["position"])
        columns["txid"].append(source.get("txid"))
        columns["commit_ts_ms"].append(source["commit_ts_ms"])
        columns["ts_ms"].append(event["ts_ms"])
        columns["key"].append(canonical_json(event["key"]))
        columns["before"].append(None if event["before"] is None else canonical_json(event["before"]))
        columns["after"].append(None if event["after"] is None else canonical_json(event["after"]))
    return pa.table(columns, schema=SCHEMA)


def convert_file(source: Path, fmt: Format) -> Path:
    """Convert one committed part file; safe to repeat after a crash at any point."""
    target = source.with_suffix(f".{fmt}")
    tmp = source.with_name(f".{target.name}.tmp")
    table = rows_of([line for line in source.read_bytes().splitlines() if line.strip()])
    with tmp.open("wb") as out:
        if fmt == "parquet":
            pq.write_table(table, out, compression="zstd")
        else:
            pa_csv.write_csv(table, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)
    source.unlink()
    return target


DEAD_LETTER_DIR = "_dead_letter"


def committed_parts(root: Path) -> list[Path]:
    """Finished part files (in-progress and pending ones start with a dot); dead letters stay as they are."""
    return sorted(p for p in root.rglob("*.jsonl") if not p.name.startswith(".") and DEAD_LETTER_DIR not in p.parts)


def convert_all(root: Path, fmt: Format, retries: int = 3) -> int:
    """Convert every committed part file under ``root``; a failed file is retried, then left for later."""
    converted = 0
    for part in committed_parts(root):
        for attempt in range(retries + 1):
            try:
                convert_file(part, fmt)
                converted += 1
                break
            except OSError as exc:
                log_fault(log, Fault.FILE_WRITE_FAILED, f"converting {part} failed: {exc}", attempt=attempt + 1)
            except (ValueError, KeyError, TypeError) as exc:
                # not an envelope file: leave it in place (nothing lost) and say so
                log_fault(log, Fault.INCONSISTENCY_DETECTED, f"{part} is not convertible, left as it is: {exc}")
                break
    return converted


class Converter:
    """Converts committed part files in the background until stopped, then once more."""

    def __init__(self, root: Path, fmt: Format, interval: float = 1.0) -> None:
        self.root, self.fmt, self.interval = root, fmt, interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="obflow-converter", daemon=True)

    def start(self) -> Converter:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            convert_all(self.root, self.fmt)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        convert_all(self.root, self.fmt)
