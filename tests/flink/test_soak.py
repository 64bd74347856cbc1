"""A million records through the real job (mini-cluster, parallelism 2), fed at a steady rate while it
runs: the CI-sized run of benchmarks.soak. What the job holds must not grow with what it has read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from benchmarks.soak import HEADER, MIB, SHARDS, after_warm_up, growth, row, soak, trend
from obflow.config import FlinkConfig

pytestmark = pytest.mark.slow

RECORDS = 1_000_000


def test_memory_state_and_open_files_stay_flat_over_a_million_records_R6_1(tmp_path: Path) -> None:
    """After the warm-up (a third of the records), the job's resident memory over the last third of
    the records is on average less than 32 MiB above that over the middle third (≈ 330,000 records
    apart: a cost of 100 B a record would show), its descriptors rise by 4 at most and its checkpoints
    not at all; the duplicate filter never holds more than its bound, ``flink.dedup_records`` ids of
    8 bytes a shard, whatever was read (as Flink last had the Python gauge); output files open stay
    at one per table and shard (two across an hour); and every record is in the output exactly once."""
    samples = soak(tmp_path, RECORDS, rate=25_000, every=2, on_sample=lambda s: print(row(s), flush=True))
    print(HEADER)
    for sample in samples:
        print(row(sample))
    last = samples[-1]
    assert last.committed == RECORDS, last
    assert len(after_warm_up(samples)) >= 8  # enough samples to see a trend
    assert trend(samples, "rss_bytes") < 32 * MIB
    assert growth(samples, "fds") <= 4
    assert 0 < max(s.state_bytes for s in samples) <= SHARDS * FlinkConfig().dedup_records * 8  # 8 B an id
    assert growth(samples, "checkpoint_bytes") <= 1024
    assert max(s.open_files for s in samples) <= 2 * SHARDS  # a table's file per shard, two across an hour
    ids = [pq.read_table(f, columns=["_event_id"]).column(0) for f in (tmp_path / "out").rglob("*.parquet")]
    assert sum(len(c) for c in ids) == RECORDS
    assert len(pc.unique(pa.concat_arrays([chunk for c in ids for chunk in c.chunks]))) == RECORDS
