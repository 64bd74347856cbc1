"""One shard of the change topic → output files, exactly once: the per-record work of the job.

A :class:`ShardWorker` runs inside the Flink subtask that owns its shard (flink_job.functions) and does
everything between DataHub and the files: read a fetch into Arrow (flink_job.reading), drop copies
(flink_job.dedup), split it by table, decode and map each table's payloads once (flink_job.mapping),
append the rows to the table's open file and commit files as they roll (flink_job.files). Nothing of
it needs Flink state or a checkpoint hook; the argument is in docs/design/exactly-once.md:

* the shard's :class:`~flink_job.files.Positions` say, per partition (a table's changes of one commit
  hour), the sequence before which every record is in a committed file (or the dead-letter queue);
  they are rewritten after each commit;
* a worker (first start, a restart after a crash, another subtask after a rescale) reads from the
  positions — ``flink.dedup_records`` records earlier, to rebuild the window of recent ids — and skips,
  per partition, what is committed;
* a partition has at most one open file, whose records follow each other in the partition, and a
  file's name follows from its first record: whatever was written after the positions were saved is
  written again under the same names, and a commit repeated replaces the file with a superset or a
  prefix of itself whose rest goes to the next file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datahub import DataHub

from flink_job.dedup import RecentIds, id_keys
from flink_job.files import FLUSH_BYTES, HOUR_MS, OpenFile, Partition, Positions, PositionsFile
from flink_job.mapping import LINE, FollowingMapping, TableMapping
from flink_job.reading import COLUMNS, Fetch, ShardFetcher
from obflow.config import ObflowConfig
from obflow.deadletter import DeadLetter, DeadLetterQueue, Stage
from obflow.faults import NoFault
from obflow.log import Fault, log_event, log_fault

log = logging.getLogger("obflow.flink")

FETCH_LIMIT = 1000  # DataHub's most per GetRecords
BATCH_RECORDS = 8000


class ShardMetrics:
    """What a worker reports; the Flink job forwards it to its metric group (no-ops here)."""

    def read(self, records: int, duplicates: int, lag_ms: int) -> None:
        pass

    def dead_letters(self, stage: str, count: int) -> None:
        pass

    def committed(
        self, table: str, rows: int, latency_seconds: np.ndarray[Any, Any], counts: np.ndarray[Any, Any]
    ) -> None:
        pass

    def write_failed(self, table: str) -> None:
        pass

    def expired(self, records: int) -> None:
        pass


@dataclass(frozen=True)
class Progress:
    """What one poll did: the newest commit time read (event time), records read and files committed,
    and whether the shard has more waiting (the poll ran out of time, not of records)."""

    newest_commit_ms: int | None
    records: int
    files: list[Path]
    more: bool = False


class ShardWorker:
    def __init__(
        self,
        config: ObflowConfig,
        client: DataHub,
        shard: str,
        dead_letters: DeadLetterQueue,
        metrics: ShardMetrics | None = None,
        faults: Any = None,
        clock: Callable[[], float] = time.monotonic,
        read_ahead: Executor | None = None,
        read_ahead_fetches: int = BATCH_RECORDS // FETCH_LIMIT,
    ) -> None:
        """``read_ahead``: where the shard's next ``read_ahead_fetches`` fetches are read and decoded while
        the caller works on those before (flink_job.reading.ShardFetcher)."""
        self.config, self.shard, self.client = config, shard, client
        self.root = Path(config.output.path)
        self.fmt = config.output.format
        self.rolling = config.output.rolling
        self.tables = config.source.qualified_tables()
        self.mappings: dict[str, TableMapping | FollowingMapping] = {}
        self.dead_letter_queue = dead_letters
        self.metrics = metrics or ShardMetrics()
        self.faults = faults or NoFault()
        self.clock = clock
        self.fetcher = self._fetcher(read_ahead, read_ahead_fetches)
        self.window = config.flink.dedup_records
        self.ids = RecentIds(self.window)
        self.positions_file = PositionsFile(self.root, config.datahub.topic, shard)
        self.positions = Positions()
        """Live: ``clean`` is the end of the last fetch processed whole; a partition's entry, the start of
        its open file, or the end of its last committed file when that is past ``clean``."""
        self.files: dict[Partition, OpenFile] = {}
        self.out_of_orderness_ms = int(config.flink.out_of_orderness * 1000)
        self.counted_from = 0  # records before it were read only to rebuild the window of recent ids

    def _fetcher(self, read_ahead: Executor | None = None, read_ahead_fetches: int = 1) -> ShardFetcher:
        datahub = self.config.datahub
        return ShardFetcher(self.client, datahub.project, datahub.topic, self.shard, on_expired=self._expired,
                            read_ahead=read_ahead, read_ahead_fetches=read_ahead_fetches)  # fmt: skip

    def _expired(self, first: int, end: int) -> None:
        """Records ``first`` to before ``end`` expired from the shard before this worker read them: those
        not in a committed file (from the positions' ``resume`` on) are lost, loudly; those before it
        were only to be read again for the window of recent ids."""
        lost_from = max(first, self.positions.resume)
        if end <= lost_from:
            return
        count = end - lost_from
        what = (f"shard {self.shard}: {count} records (sequences {lost_from} to {end - 1}) expired from DataHub "
                "before the job read them; they are not in the output. Read the topic sooner (a job that "
                "falls behind) or give the topic a longer lifecycle in DataHub")  # fmt: skip
        log_fault(log, Fault.DATAHUB_RECORDS_EXPIRED, what, level=logging.ERROR, shard=self.shard,
                  first_sequence=lost_from, records=count)  # fmt: skip
        self.metrics.expired(count)

    # ---- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Resume from the committed positions, rebuilding the window of recent ids on the way."""
        self.positions = self.positions_file.load()
        resume = self.counted_from = self.positions.resume
        self.fetcher.seek(max(resume - self.window, 0))
        log_event(log, "shard.opened", f"shard {self.shard} resumes at {resume}", shard=self.shard, resume=resume)

    def close(self) -> None:
        """Drop the open files: the next worker of the shard writes them again from the positions."""
        self.fetcher.close()
        for file in self.files.values():
            file.abort()
        self.files.clear()

    @property
    def state_bytes(self) -> int:
        """What the worker holds besides the rows it buffers: the window of recent ids."""
        return self.ids.state_bytes

    # ---- one poll -------------------------------------------------------------------------------

    def poll(self, budget_seconds: float) -> Progress:
        """Read while fetches come back full, for at most ``budget_seconds``, processing up to
        :data:`BATCH_RECORDS` at a time (the cost per batch is spread over more records); then roll the
        files that are due."""
        deadline = self.clock() + budget_seconds
        newest: int | None = None
        records = 0
        committed: list[Path] = []
        pending: list[pa.Table] = []
        while True:
            fetch = self.fetcher.fetch(FETCH_LIMIT)
            count = fetch.records.num_rows
            if count:
                pending.append(fetch.records)
                records += count
            more = count == FETCH_LIMIT
            drained = not more or self.clock() > deadline
            if pending and (drained or sum(t.num_rows for t in pending) >= BATCH_RECORDS):
                batch = Fetch(pa.concat_tables(pending), fetch.next_sequence)
                pending = []
                newest_here, files = self.process(batch)
                newest = newest_here if newest is None or newest_here is None else max(newest, newest_here)
                committed += files
            if drained:
                break
        committed += self.roll_due()
        return Progress(newest, records, committed, more)

    def process(self, fetch: Fetch) -> tuple[int | None, list[Path]]:
        """One fetch: copies dropped, each table's new records into its open file, files committed as
        they roll. Returns the newest commit time read and the files committed."""
        records = fetch.records
        sequences = records.column("sequence").to_numpy()
        keys, well_formed = id_keys(records.column("event_id"))
        fresh = self.ids.admit(keys)
        counted = sequences >= self.counted_from
        commits = records.column("commit_ts_ms")
        newest = pc.max(commits).as_py()
        lag_ms = max(int(time.time() * 1000) - int(newest), 0) if newest is not None else 0
        self.metrics.read(int(np.count_nonzero(counted)), int(np.count_nonzero(~fresh & well_formed & counted)), lag_ms)
        committed: list[Path] = []
        letters: list[DeadLetter] = []
        if not well_formed.all():
            undecodable = ~well_formed & (sequences >= self.positions.clean)
            letters += self._letters(records, undecodable, "decode", "event_id is not 32 hexadecimal digits")
        live = fresh & well_formed
        names = records.column("table_name")
        hours = commits.to_numpy(zero_copy_only=False) // HOUR_MS
        for table in pc.unique(pc.filter(names, pa.array(live))).to_pylist():
            mask = live & pc.equal(names, table).to_numpy(zero_copy_only=False)
            for hour in np.unique(hours[mask]).tolist():
                in_hour = hours == hour
                mask[in_hour] &= sequences[in_hour] >= self.positions.committed(Partition(table, hour))
            if not mask.any():
                continue
            committed += self._write_table(table, records.filter(pa.array(mask)), letters)
        if letters:
            self._send(letters)
        self._processed_up_to(fetch.next_sequence)
        self.faults.reached("records", int(np.count_nonzero(counted)))
        return (None if newest is None else int(newest)), committed

    def _processed_up_to(self, sequence: int) -> None:
        self.positions.clean = sequence
        self.positions.partitions = {
            part: at for part, at in self.positions.partitions.items() if part in self.files or at > sequence
        }

    def roll_due(self) -> list[Path]:
        """Commit the open files that span ``output.rolling.max_span`` of wall time since they opened."""
        now = self.clock()
        due = [part for part, file in self.files.items() if now - file.opened_at >= self.rolling.max_span]
        return self._commit_all(due)

    # ---- writing --------------------------------------------------------------------------------

    def _mapping(self, table: str) -> TableMapping | FollowingMapping:
        mapping = self.mappings.get(table)
        if mapping is None:
            config = self.tables.get(table)
            if config is not None and config.columns:
                mapping = TableMapping(config)
            elif config is not None:
                mapping = FollowingMapping()
            else:  # captured since the job started (a table added: capture alone restarts), or not by us
                reason = f"table {table} is not in source.tables, and its changes do not carry its columns"
                mapping = FollowingMapping(shapeless_error=reason)
            self.mappings[table] = mapping
        return mapping

    def _write_table(self, table: str, records: pa.Table, letters: list[DeadLetter]) -> list[Path]:
        runs, bad = self._mapping(table).runs(records.column("payload").combine_chunks())
        for line in bad:
            letters.append(self._letter(records, line.number, line.stage, line.error, table))  # type: ignore[arg-type]
        committed: list[Path] = []
        for numbered in runs:  # in sequence order, each of one table shape
            lines = numbered.column(LINE).combine_chunks()
            sequences, commits, row_keys = (pc.take(records.column(name), lines).combine_chunks()
                                            for name in ("sequence", "commit_ts_ms", "pk"))  # fmt: skip
            rows = numbered.drop_columns([LINE])
            hours = commits.to_numpy(zero_copy_only=False) // HOUR_MS
            for hour in np.unique(hours).tolist():  # each in sequence order
                chosen = pa.array(hours == hour)
                committed += self._append(Partition(table, hour), rows.filter(chosen), sequences.filter(chosen),
                                          commits.filter(chosen), row_keys.filter(chosen))  # fmt: skip
        return committed

    def _append(
        self, partition: Partition, rows: pa.Table, sequences: pa.Array, commits: pa.Array, row_keys: pa.Array
    ) -> list[Path]:
        committed: list[Path] = []
        file = self.files.get(partition)
        if file is not None and not file.schema.equals(rows.schema, check_metadata=True):
            # the table's shape changed: the file ends before the first change of the new one
            log_event(log, "file.rolled", f"{partition}: the table's columns changed; a new file starts at "
                      f"sequence {int(sequences[0].as_py())}", table=partition.table, shard=self.shard)  # fmt: skip
            committed, file = self._commit_all([partition]), None
        if file is None:
            first_sequence, first_commit = int(sequences[0].as_py()), int(commits[0].as_py())
            file = self._new_file(partition, first_sequence, first_commit, self.clock(), rows.schema)
            self.files[partition] = file
            self.positions.partitions[partition] = first_sequence
            if not self._attempt(partition, file.open):
                end = int(sequences[-1].as_py()) + 1
                reason = f"opening {file.in_progress} failed {self._attempts} times"
                return committed + self._give_up(partition, end, reason)
        if not self._attempt(partition, lambda: file.append(rows, sequences, commits, row_keys), retry=False):
            end = max(file.last_sequence, int(pc.max(sequences).as_py())) + 1
            return committed + self._rewrite(partition, end, commit=False)
        full = file.size >= self.rolling.max_size
        spans = file.newest_commit_ms - file.first_commit_ms >= self.rolling.max_span * 1000
        return committed + (self._commit_all([partition]) if full or spans else [])

    def _new_file(
        self, partition: Partition, first_sequence: int, first_commit_ms: int, opened_at: float, schema: pa.Schema
    ) -> OpenFile:
        flush_bytes = min(FLUSH_BYTES, max(self.rolling.max_size // 8, 1))
        return OpenFile(self.root, partition.table, self.shard, first_sequence, first_commit_ms, schema, self.fmt,
                        opened_at, self.out_of_orderness_ms, flush_bytes)  # fmt: skip

    def _commit_all(self, partitions: list[Partition]) -> list[Path]:
        return [path for partition in partitions if (path := self._commit(partition)) is not None]

    def _commit(self, partition: Partition) -> Path | None:
        """Make the partition's open file visible, then move the partition's position past it."""
        file = self.files[partition]
        if not self._attempt(partition, file.finish, retry=False):
            paths = self._rewrite(partition, file.last_sequence + 1, commit=True)
            return paths[0] if paths else None
        self.faults.reached("file.written")
        if not self._attempt(partition, file.publish):
            self._give_up(partition, file.last_sequence + 1, f"renaming {file.in_progress} failed")
            return None
        return self._committed(partition, file)

    def _committed(self, partition: Partition, file: OpenFile) -> Path:
        del self.files[partition]
        self.positions.partitions[partition] = file.last_sequence + 1
        self.faults.reached("file.renamed")
        self.positions_file.save(self.positions)
        self.faults.reached("positions.saved")
        seconds = np.array(list(file.commit_seconds), dtype=np.float64)
        counts = np.array(list(file.commit_seconds.values()), dtype=np.int64)
        self.metrics.committed(partition.table, file.rows, np.maximum(time.time() - seconds, 0.0), counts)
        return file.path

    @property
    def _attempts(self) -> int:
        return self.config.output.write_retries + 1

    def _attempt(self, partition: Partition, action: Callable[[], Any], retry: bool = True) -> bool:
        """Run a file operation, again up to ``output.write_retries`` times if it fails and ``retry`` (R3.7)."""
        attempts = self._attempts if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                action()
                return True
            except OSError as exc:
                self.metrics.write_failed(partition.table)
                what = f"{partition}, shard {self.shard} (attempt {attempt} of {attempts}): {exc}"
                log_fault(log, Fault.FILE_WRITE_FAILED, what, attempt=attempt)
                if attempt < attempts:
                    time.sleep(min(0.2 * attempt, 2.0))
        return False

    def _rewrite(self, partition: Partition, end: int, commit: bool) -> list[Path]:
        """A write into an open file failed, and what it holds is unknown: write the file again, with its
        records up to ``end``, from the shard (the log holds what the file held) — and commit it, if that
        was what failed — up to ``output.write_retries`` times; then give up."""
        broken = self.files[partition]
        broken.abort()
        for attempt in range(2, self._attempts + 1):
            time.sleep(min(0.2 * attempt, 2.0))
            records = self.reread(partition, broken.first_sequence, end)
            rows = self._rows_of(broken, records)
            lines = rows.column(LINE).combine_chunks()
            again = self._new_file(partition, broken.first_sequence, broken.first_commit_ms, broken.opened_at,
                                   broken.schema)  # fmt: skip
            try:
                again.open()
                again.append(rows.drop_columns([LINE]), *(pc.take(records.column(name), lines).combine_chunks()
                                                          for name in ("sequence", "commit_ts_ms", "pk")))  # fmt: skip
                if commit:
                    again.finish()
                    self.faults.reached("file.written")
                    again.publish()
            except OSError as exc:
                again.abort()
                self.metrics.write_failed(partition.table)
                what = f"writing {again.path} again (attempt {attempt} of {self._attempts}): {exc}"
                log_fault(log, Fault.FILE_WRITE_FAILED, what, attempt=attempt)
                continue
            self.files[partition] = again
            return [self._committed(partition, again)] if commit else []
        return self._give_up(partition, end, f"writing {broken.path} failed {self._attempts} times")

    def _give_up(self, partition: Partition, end: int, reason: str) -> list[Path]:
        """The partition's open file cannot be written: its records go to the dead-letter queue (R3.8),
        and the partition's position moves past them."""
        file = self.files.pop(partition)
        file.abort()
        records = self.reread(partition, file.first_sequence, end)
        # what the file would have held: those that decode and map (the others went their own way)
        held = np.zeros(records.num_rows, dtype=bool)
        held[self._rows_of(file, records).column(LINE).to_numpy()] = True
        self._send(self._letters(records, held, "write", reason, partition.table))
        self.positions.partitions[partition] = end
        self.positions_file.save(self.positions)  # as a commit: those records are done with
        return []

    def _rows_of(self, file: OpenFile, records: pa.Table) -> pa.Table:
        """The rows of ``records`` (read again for ``file``) that ``file`` holds: those of its shape (the
        file ended where the table's shape changed), with their :data:`LINE`."""
        runs, _ = self._mapping(file.table).runs(records.column("payload").combine_chunks())
        held = [
            rows for rows in runs if rows.schema.remove(rows.schema.get_field_index(LINE)).equals(file.schema, True)
        ]
        return pa.concat_tables(held) if held else file.schema.append(pa.field(LINE, pa.int64())).empty_table()

    def reread(self, partition: Partition, first: int, end: int) -> pa.Table:
        """The records of ``partition`` in ``[first, end)`` that are not copies — read again from DataHub,
        the window of recent ids rebuilt as it was: exactly what a file of it starting at ``first`` holds."""
        fetcher = self._fetcher()
        fetcher.seek(max(first - self.window, 0))
        ids = RecentIds(self.window)
        chosen = [COLUMNS.empty_table()]
        while fetcher.next_sequence < end:
            records = fetcher.fetch(FETCH_LIMIT).records
            if records.num_rows == 0:
                break
            keys, well_formed = id_keys(records.column("event_id"))
            sequences = records.column("sequence").to_numpy()
            mask = ids.admit(keys) & well_formed & (sequences >= first) & (sequences < end)
            mask &= pc.equal(records.column("table_name"), partition.table).to_numpy(zero_copy_only=False)
            mask &= records.column("commit_ts_ms").to_numpy() // HOUR_MS == partition.hour
            chosen.append(records.filter(pa.array(mask)))
        return pa.concat_tables(chosen)

    # ---- dead letters ---------------------------------------------------------------------------

    def _letters(
        self, records: pa.Table, mask: np.ndarray[Any, Any], stage: Stage, error: str, table: str = ""
    ) -> list[DeadLetter]:
        return [self._letter(records, index, stage, error, table) for index in np.flatnonzero(mask).tolist()]

    def _letter(self, records: pa.Table, index: int, stage: Stage, error: str, table: str = "") -> DeadLetter:
        row = records.slice(index, 1).to_pylist()[0]
        location = {"shard": self.shard, "sequence": row["sequence"]}
        return DeadLetter(str(row["payload"] or ""), error, stage, table or str(row["table_name"] or ""),
                          str(row["event_id"] or ""), location)  # fmt: skip

    def _send(self, letters: list[DeadLetter]) -> None:
        self.dead_letter_queue.send(letters)
        stages: dict[str, int] = {}
        for letter in letters:
            stages[letter.stage] = stages.get(letter.stage, 0) + 1
        for stage, count in stages.items():
            self.metrics.dead_letters(stage, count)
