"""From the job's committed staging files to the output files users read, exactly once (R9.2).

The Flink job writes each table's change envelopes through Flink's exactly-once ``FileSink`` into
``<output.path>/.staging/<table>/``; a part file there becomes visible (loses its leading dot) only
when the checkpoint that covers it completes. The finalizer turns every such *committed* part into
output files and nothing else does:

1. decode and map the part's envelopes in one Arrow batch (flink_job.mapping); lines that fail
   become dead letters;
2. split the rows by the hour of their commit time and write one file per hour as
   ``<table>/<yyyy-MM-dd>/<HH>/<table>-<first commit, UTC>-st<subtask>-<part digest>.<ext>``
   (R3.6): ``.<name>.tmp`` first, fsync, then an atomic rename. Names derive from the part and its
   rows only, so a repeat writes the same files with the same content;
3. a failed write is retried ``output.write_retries`` times (R3.7); then its rows go to the
   dead-letter queue (R3.8) and the finalizer moves on;
4. send the part's dead letters, and only then delete the part.

A crash between any two steps leaves the part in place, and the next pass redoes it to the same
names: every committed change ends in exactly one visible output file. docs/design/exactly-once.md.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from prometheus_client import Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from flink_job.mapping import LINE, TableMapping
from obflow.config import ObflowConfig
from obflow.deadletter import DeadLetter, DeadLetterQueue
from obflow.log import Fault, log_event, log_fault

log = logging.getLogger("obflow.flink.finalize")

STAGING = ".staging"
DEAD_LETTER_TABLE = "_dead_letter"
"""The staging folder of records the job itself sent to the dead-letter queue (unknown tables)."""
SUFFIX = {"json": ".jsonl", "parquet": ".parquet", "csv": ".csv"}

FILES = Counter("obflow_output_files", "Output files committed", ["table", "format"])
ROWS = Counter("obflow_output_rows", "Rows committed to output files", ["table"])
DEAD_LETTERS = Counter("obflow_dead_letters", "Records sent to the dead-letter queue", ["stage", "to"])
WRITE_FAILURES = Counter("obflow_output_write_failures", "Failed output file writes (each try)", ["table"])
BACKLOG = Gauge("obflow_output_staged_parts", "Committed staging parts not yet finalized")
LAST_COMMIT = Gauge("obflow_output_last_commit_timestamp_seconds", "When an output file was last committed")
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class LatencyHistogram(Collector):
    """``obflow_end_to_end_latency_seconds``: database commit → row visible in an output file (R7.3).

    Observed for whole batches at once (numpy), which prometheus_client's Histogram cannot do.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
        self.total = 0.0
        self.lock = threading.Lock()

    def observe_many(self, seconds: np.ndarray[Any, Any]) -> None:
        with self.lock:
            self.counts += np.bincount(np.searchsorted(LATENCY_BUCKETS, seconds), minlength=len(self.counts))
            self.total += float(seconds.sum())

    def collect(self) -> list[HistogramMetricFamily]:
        with self.lock:
            cumulative = np.cumsum(self.counts)
            buckets = [(str(b), int(c)) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=False)]
            buckets.append(("+Inf", int(cumulative[-1])))
            family = HistogramMetricFamily(
                "obflow_end_to_end_latency_seconds", "Database commit to row visible in an output file"
            )
            family.add_metric([], buckets, self.total)
        return [family]


LATENCY = LatencyHistogram()
REGISTRY.register(LATENCY)


@dataclass
class FinalizeResult:
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    dead_letters: int = 0


class Finalizer:
    """Finalizes committed staging parts of one output folder; safe to repeat after a crash anywhere."""

    def __init__(self, config: ObflowConfig, dead_letters: DeadLetterQueue | None = None) -> None:
        self.config = config
        self.root = Path(config.output.path)
        self.staging = self.root / STAGING
        self.format = config.output.format
        self.dead_letters = dead_letters or DeadLetterQueue(config)
        self.mappings: dict[str, TableMapping] = {}
        self.tables = config.source.qualified_tables()
        self.write_hook: Callable[[Path], None] = lambda _: None
        """Called before each output write; tests make it raise to inject write failures."""

    def committed_parts(self) -> list[Path]:
        """Finished staging parts (in-progress and pending ones start with a dot), oldest first."""
        if not self.staging.is_dir():
            return []
        parts = [p for p in self.staging.rglob("*") if p.is_file() and not p.name.startswith(".")]
        return sorted(parts, key=lambda p: (p.stat().st_mtime, p.name))

    def run_once(self) -> FinalizeResult:
        total = FinalizeResult()
        parts = self.committed_parts()
        BACKLOG.set(len(parts))
        for part in parts:
            result = self.finalize(part)
            total.files += result.files
            total.rows += result.rows
            total.dead_letters += result.dead_letters
            BACKLOG.dec()
        return total

    def finalize(self, part: Path) -> FinalizeResult:
        relative = part.relative_to(self.staging)
        table = relative.parts[0]
        lines, subtask = read_part(part)
        if table == DEAD_LETTER_TABLE:
            letters = [DeadLetter.from_json(line) for line in lines]
            self._send(letters)
            part.unlink()
            return FinalizeResult(dead_letters=len(letters))
        mapping = self.mappings.get(table) or self.mappings.setdefault(table, TableMapping(self.tables.get(table)))
        rows, bad = mapping.rows(lines)
        location = {"file": str(relative)}
        letters = [
            DeadLetter(b.line.decode(errors="replace"), b.error, b.stage, table, event_id_of(b.line), location)  # type: ignore[arg-type]
            for b in bad
        ]
        result = FinalizeResult()
        digest = hashlib.blake2b(str(relative).encode(), digest_size=4).hexdigest()
        written_commits = []
        for hour_rows in split_by_hour(rows):
            target = self.target(table, hour_rows, subtask, digest)
            if self._write_with_retries(hour_rows.drop_columns([LINE]), target, table):
                result.files.append(target)
                result.rows += hour_rows.num_rows
                written_commits.append(pc.cast(hour_rows.column("_commit_ts"), pa.int64()).to_numpy())
            else:
                error = f"writing {target} failed {self.config.output.write_retries + 1} times"
                for number in hour_rows.column(LINE).to_pylist():
                    line = lines[number]
                    letters.append(
                        DeadLetter(line.decode(errors="replace"), error, "write", table, event_id_of(line), location)
                    )
        self._send(letters)
        part.unlink()
        result.dead_letters = len(letters)
        if result.files:  # latency of the rows now visible in files, not of those dead-lettered
            commits = np.concatenate(written_commits)
            LATENCY.observe_many(np.maximum(time.time() - commits / 1000.0, 0.0))
            ROWS.labels(table).inc(result.rows)
            FILES.labels(table, self.format).inc(len(result.files))
            LAST_COMMIT.set_to_current_time()
        return result

    def target(self, table: str, rows: pa.Table, subtask: str, digest: str) -> Path:
        first: datetime = rows.column("_commit_ts")[0].as_py()
        stamp = first.strftime("%Y%m%dT%H%M%S") + f"{first.microsecond // 1000:03d}Z"
        folder = self.root / table / first.strftime("%Y-%m-%d") / first.strftime("%H")
        return folder / f"{table}-{stamp}-st{subtask}-{digest}{SUFFIX[self.format]}"

    def _write_with_retries(self, rows: pa.Table, target: Path, table: str) -> bool:
        attempts = self.config.output.write_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self.write_hook(target)
                write_file(rows, target, self.format)
                return True
            except OSError as exc:
                WRITE_FAILURES.labels(table).inc()
                log_fault(log, Fault.FILE_WRITE_FAILED, f"writing {target} failed: {exc}", attempt=attempt)
                if attempt < attempts:
                    time.sleep(min(0.2 * attempt, 2.0))
        return False

    def _send(self, letters: list[DeadLetter]) -> None:
        if letters:
            where = self.dead_letters.send(letters)
            for letter in letters:
                DEAD_LETTERS.labels(letter.stage, where).inc()


def event_id_of(line: bytes) -> str:
    try:
        envelope = orjson.loads(line)
    except orjson.JSONDecodeError:
        return ""
    return str(envelope.get("event_id") or "") if isinstance(envelope, dict) else ""


def read_part(part: Path) -> tuple[list[bytes], str]:
    """A staging part's envelope lines and the subtask that wrote it (from its ``#<subtask>`` lines)."""
    lines, subtask = [], "0"
    for line in part.read_bytes().split(b"\n"):
        if line.startswith(b"#"):
            subtask = line[1:].decode()
        elif line.strip():
            lines.append(line)
    return lines, subtask


def split_by_hour(rows: pa.Table) -> list[pa.Table]:
    """``rows`` in commit order groups, one per UTC hour of ``_commit_ts``."""
    if rows.num_rows == 0:
        return []
    hours = pc.floor_temporal(rows.column("_commit_ts"), unit="hour")
    groups = []
    for hour in pc.unique(hours).to_pylist():
        groups.append(rows.filter(pc.equal(hours, pa.scalar(hour, hours.type))))
    return groups


def write_file(rows: pa.Table, target: Path, fmt: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as out:
        if fmt == "parquet":
            pq.write_table(rows, out, compression="zstd")
        elif fmt == "csv":
            pa_csv.write_csv(rows, out)
        else:
            out.write(
                b"".join(orjson.dumps(row, default=_json_default) + b"\n" for row in json_ready(rows).to_pylist())
            )
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)


def json_ready(rows: pa.Table) -> pa.Table:
    """Timestamps as ISO-8601 text (``Z`` when in UTC, the column's precision) and decimals as exact
    text, converted by Arrow for the whole column: what JSON lines carry and Arrow's reader reads back."""
    columns = []
    for column in rows.columns:
        kind = column.type
        if pa.types.is_timestamp(kind):
            columns.append(pc.strftime(column, format="%Y-%m-%dT%H:%M:%S" + ("Z" if kind.tz else "")))
        elif pa.types.is_decimal(kind):
            columns.append(pc.cast(column, pa.string()))
        else:
            columns.append(column)
    return pa.table(columns, names=rows.column_names)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class FinalizerThread:
    """Runs a :class:`Finalizer` every ``interval`` until stopped, then once more."""

    def __init__(self, finalizer: Finalizer, interval: float) -> None:
        self.finalizer, self.interval = finalizer, interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="obflow-finalizer", daemon=True)

    def start(self) -> FinalizerThread:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self._pass()

    def _pass(self) -> None:
        try:
            result = self.finalizer.run_once()
        except Exception as exc:  # keep finalizing later; the parts stay in place, nothing is lost
            log_fault(log, Fault.FILE_WRITE_FAILED, f"finalizing failed, will retry: {exc}", level=logging.ERROR)
            return
        if result.files or result.dead_letters:
            log_event(
                log,
                "output.committed",
                f"{result.rows} rows in {len(result.files)} files, {result.dead_letters} dead letters",
                rows=result.rows,
                files=len(result.files),
                dead_letters=result.dead_letters,
            )

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)
        self._pass()
