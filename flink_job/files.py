"""Output files: named, in progress, committed; and each shard's committed positions.

A file holds the changes of one table, from one shard of the change topic, from one DataHub sequence
on, all committed within one hour (R3.6):

    <output.path>/<SCHEMA.TABLE>/<yyyy-MM-dd>/<HH>/
        <SCHEMA.TABLE>-<first commit, yyyyMMddTHHmmssSSSZ>-s<shard>-<first sequence, 12 digits>.<ext>

A table's changes of one commit hour in one shard are a *partition* of the shard's records; each has
at most one file open. A file's name follows from the shard's records alone (the partition's first
record at or after the sequence the file starts from), so writing the same records again writes the
same name. While it is written it is ``.<name>.inprogress`` in the same folder; it becomes visible by
one rename, after an fsync, and only then does the shard's :class:`Positions` file move past it
(docs/design/exactly-once.md).

Formats (R3.1 to R3.3; the text formats in flink_job.formats): JSON lines (timestamps ISO-8601 with
``Z`` when in UTC, decimals as exact text), Parquet (zstd, one row group per flushed buffer) and CSV
(a header; a null is an empty field, an empty string ``""``, a time in UTC quoted text).

DataHub holds a shard's changes in the order the capture agent's puts landed, which keeps each row's
changes in order but not the commit order across rows; rows are therefore buffered and written in commit
order once the newest commit time buffered is ``flink.out_of_orderness`` past them, so a file's rows are
in commit order as a reader expects them (R2.3), bar changes that arrive later than that behind newer
ones. A row's own changes always keep their order (R9.4), even where their commit times do not: a
trigger stamps a change with its statement's time, and a statement that waited for the row's lock stamps
an earlier time than the change it waited for. For the order, a change counts as committed no earlier
than the row's change before it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from flink_job.formats import csv_ready, csv_schema, json_lines

SUFFIX = {"json": ".jsonl", "parquet": ".parquet", "csv": ".csv"}
IN_PROGRESS = ".inprogress"
POSITIONS = "_obflow"
"""The folder under ``output.path`` with each shard's committed positions (not output: it starts with _)."""
FLUSH_ROWS = 8192
FLUSH_BYTES = 8 * 1024**2
WRITE_BUFFER = 1024**2  # bytes gathered before a write to the file
HOUR_MS = 3_600_000
_SEQUENCE = "__sequence"
_ROW = "__row"


@dataclass(frozen=True, order=True)
class Partition:
    """A table's changes of one commit hour (UTC hours since the epoch) in one shard."""

    table: str
    hour: int

    def __str__(self) -> str:
        start = datetime.fromtimestamp(self.hour * HOUR_MS / 1000, UTC)
        return f"{self.table} {start:%Y-%m-%dT%H}h"

    @property
    def key(self) -> str:
        """Its name in a positions file."""
        return f"{self.table}@{self.hour}"

    @classmethod
    def parse(cls, text: str) -> Partition:
        table, _, hour = text.rpartition("@")
        return cls(table, int(hour))


def causal_commit_ms(row_keys: pa.ChunkedArray, commit_ms: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    """Each change's commit time for the order of a file: its own, or the row's change before it's if
    that is later (changes in sequence order; ``row_keys`` their rows). A running maximum per row: rows
    sorted by key are laid end to end on one number line, each on its own span, so one running maximum
    over all of them never carries a row's time over to the next row."""
    times: npt.NDArray[np.int64] = commit_ms.to_numpy().astype(np.int64)
    if len(times) == 0:
        return times
    rows = pc.dictionary_encode(row_keys).combine_chunks().indices.to_numpy().astype(np.int64)
    by_row = np.argsort(rows, kind="stable")
    base = int(times.min())
    span = int(times.max()) - base + 1
    running = np.maximum.accumulate(rows[by_row] * span + (times[by_row] - base))
    causal: npt.NDArray[np.int64] = np.empty_like(times)
    causal[by_row] = running - rows[by_row] * span + base
    return causal


def relative_name(table: str, shard: str, first_sequence: int, first_commit_ms: int, fmt: str) -> Path:
    first = datetime.fromtimestamp(first_commit_ms / 1000, UTC)
    stamp = first.strftime("%Y%m%dT%H%M%S") + f"{first_commit_ms % 1000:03d}Z"
    name = f"{table}-{stamp}-s{shard}-{first_sequence:012d}{SUFFIX[fmt]}"
    return Path(table) / first.strftime("%Y-%m-%d") / first.strftime("%H") / name


@dataclass
class OpenFile:
    """An output file being written: rows appended in batches, then committed by one rename."""

    root: Path
    table: str
    shard: str
    first_sequence: int
    first_commit_ms: int
    schema: pa.Schema
    fmt: str
    opened_at: float  # monotonic seconds
    out_of_orderness_ms: int = 0
    flush_bytes: int = FLUSH_BYTES
    """Buffered bytes that cause a flush; smaller for a small output.rolling.max_size, so that the size
    check sees what the format really takes on disk."""
    rows: int = 0
    last_sequence: int = -1
    newest_commit_ms: int = 0
    written_bytes: int = 0
    commit_seconds: dict[int, int] = field(default_factory=dict)
    """Rows per commit second: the end-to-end latency of each row once the file is visible (R7.3)."""
    _buffer: list[pa.Table] = field(default_factory=list)
    _buffered_bytes: int = 0
    _flushed_arrow_bytes: int = 0
    _out: pa.NativeFile | None = None
    _writer: Any = None

    @property
    def path(self) -> Path:
        return self.root / relative_name(self.table, self.shard, self.first_sequence, self.first_commit_ms, self.fmt)

    @property
    def in_progress(self) -> Path:
        path = self.path
        return path.with_name(f".{path.name}{IN_PROGRESS}")

    @property
    def partition(self) -> Partition:
        return Partition(self.table, self.first_commit_ms // HOUR_MS)

    @property
    def size(self) -> int:
        """Bytes written so far, plus what the buffer will take on disk (at the ratio seen so far)."""
        ratio = self.written_bytes / self._flushed_arrow_bytes if self._flushed_arrow_bytes else 1.0
        return self.written_bytes + int(self._buffered_bytes * ratio)

    def open(self) -> None:
        """Create the in-progress file (empty; one left by a crash is overwritten)."""
        self.in_progress.parent.mkdir(parents=True, exist_ok=True)
        # Arrow's own file, not a Python one: Parquet and CSV writers would call a Python file's write()
        # from C++ through PyGILState, which pemja's thread mode (a thread state per chained Python
        # operator, all on the task's thread) does not support: it crashed the JVM in _PyType_Lookup
        # with no current thread state.
        self._out = pa.BufferedOutputStream(pa.OSFile(str(self.in_progress), "wb"), buffer_size=WRITE_BUFFER)

    def append(self, rows: pa.Table, sequences: pa.Array, commit_ms: pa.Array, row_keys: pa.Array) -> None:
        """``rows`` (this file's schema) of the records at ``sequences``, committed at ``commit_ms``, of the
        source rows ``row_keys`` (their primary keys)."""
        if rows.num_rows == 0:
            return
        self._buffer.append(rows.append_column(_SEQUENCE, sequences).append_column(_ROW, row_keys))
        self._buffered_bytes += rows.nbytes
        self.rows += rows.num_rows
        self.last_sequence = max(self.last_sequence, int(pc.max(sequences).as_py()))
        self.newest_commit_ms = max(self.newest_commit_ms, int(pc.max(commit_ms).as_py()))
        seconds, counts = np.unique(commit_ms.to_numpy(zero_copy_only=False) // 1000, return_counts=True)
        for second, count in zip(seconds.tolist(), counts.tolist(), strict=True):
            self.commit_seconds[second] = self.commit_seconds.get(second, 0) + count
        if self._buffered_rows >= FLUSH_ROWS or self._buffered_bytes >= self.flush_bytes:
            self.flush(until_ms=self.newest_commit_ms - self.out_of_orderness_ms)
            if self._buffered_rows >= 4 * FLUSH_ROWS or self._buffered_bytes >= 4 * self.flush_bytes:
                self.flush()  # a burst within out_of_orderness: memory stays bounded

    @property
    def _buffered_rows(self) -> int:
        return sum(t.num_rows for t in self._buffer)

    def flush(self, until_ms: int | None = None) -> None:
        """Write the buffered rows committed up to ``until_ms`` (all: None), in commit order, each row's
        changes in their own order."""
        if not self._buffer:
            return
        assert self._out is not None, "open() first"
        rows = pa.concat_tables(self._buffer)
        by_sequence = pc.sort_indices(rows.column(_SEQUENCE)).to_numpy()
        commits = pc.cast(rows.column("_commit_ts").take(by_sequence), pa.int64())
        causal = causal_commit_ms(rows.column(_ROW).take(by_sequence), commits)
        by_commit = np.argsort(causal, kind="stable")  # ties stay in sequence order
        rows, order_ms = rows.take(pa.array(by_sequence[by_commit])), causal[by_commit]
        if until_ms is not None:
            ready = int(np.searchsorted(order_ms, until_ms, "right"))
            rows, kept = rows.slice(0, ready), rows.slice(ready)
            self._buffer = [kept] if kept.num_rows else []
            self._buffered_bytes = kept.nbytes if kept.num_rows else 0
        else:
            self._buffer, self._buffered_bytes = [], 0
        if rows.num_rows == 0:
            return
        rows = rows.drop_columns([_SEQUENCE, _ROW])
        self._flushed_arrow_bytes += rows.nbytes
        if self.fmt == "parquet":
            if self._writer is None:
                self._writer = pq.ParquetWriter(self._out, self.schema, compression="zstd")
            self._writer.write_table(rows)
        elif self.fmt == "csv":
            if self._writer is None:
                self._writer = pa_csv.CSVWriter(self._out, csv_schema(self.schema))
            self._writer.write_table(csv_ready(rows))
        else:
            self._out.write(json_lines(rows))
        self.written_bytes = self._out.tell()

    def finish(self) -> None:
        """Flush, close and fsync the in-progress file: whole and durable, not yet visible."""
        self.flush()
        assert self._out is not None, "open() first"
        if self._writer is not None:
            self._writer.close()  # Parquet's footer; CSV has none
        self._out.close()  # flushes the buffer into the file
        self._out = None
        fsync_path(self.in_progress)

    def publish(self) -> Path:
        """Rename the finished file to its final name: visible, whole, from now on."""
        target = self.path
        self.in_progress.replace(target)
        fsync_path(target.parent)
        return target

    def abort(self) -> None:
        """Forget the file: close it and remove what was written (as far as the disk lets: a next
        writer of the same file truncates whatever is left)."""
        with contextlib.suppress(OSError):
            if self._out is not None and not self._out.closed:
                self._out.close()
        self._out, self._writer, self._buffer = None, None, []
        with contextlib.suppress(OSError):
            self.in_progress.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Make a file's data, or a folder's entries, durable (any descriptor of either syncs it)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass
class Positions:
    """Where one shard's output is durable: every record of a partition before its entry in
    ``partitions`` — or, for one not listed, before ``clean`` — is in a committed file, in the
    dead-letter queue, or a copy."""

    clean: int = 0
    partitions: dict[Partition, int] = field(default_factory=dict)

    def committed(self, partition: Partition) -> int:
        return self.partitions.get(partition, self.clean)

    @property
    def resume(self) -> int:
        """The first sequence a reader must read again: nothing before it is pending."""
        return min([self.clean, *self.partitions.values()])


class PositionsFile:
    """One shard's :class:`Positions`, rewritten atomically (temporary file, fsync, rename)."""

    def __init__(self, root: Path, topic: str, shard: str) -> None:
        self.path = root / POSITIONS / "positions" / topic / f"shard-{shard}.json"

    def load(self) -> Positions:
        if not self.path.exists():
            return Positions()
        data = orjson.loads(self.path.read_bytes())
        partitions = {Partition.parse(k): int(v) for k, v in data["partitions"].items()}
        return Positions(clean=int(data["clean"]), partitions=partitions)

    def save(self, positions: Positions) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        partitions = {k.key: v for k, v in sorted(positions.partitions.items())}
        with tmp.open("wb") as out:
            out.write(orjson.dumps({"clean": positions.clean, "partitions": partitions}))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)
        fsync_path(self.path.parent)
