"""The job's mapping stage alone (flink_job.mapping): payloads → output rows, records per CPU-second.

The records: ``--records`` changes of the sample table (inserts, updates, deletes), mapped in batches
of 8,000 (the shard worker's batch) by:

1. configured columns (``source.tables[].columns``: the baseline, ratio 1.00), then the same changes
   without the table's shape in them (what the shape costs in decoding: bytes);
2. columns that follow the table: the same changes carrying their table's shape
   (``source.table_schema``), every batch of the shape of the one before (the steady state);
3. the same, with the shape changing in the middle of every batch (ADD COLUMN: the worst case, a
   second decode of each batch to split it);
4. events without their shape: ``key``/``before``/``after`` as JSON text.

Best of three rounds each (this machine's speed varies from one second to the next).
Run: ``python -m benchmarks.mapping [--records 80000]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import pyarrow as pa

from benchmarks.common import machine
from flink_job.mapping import FollowingMapping, TableMapping
from obflow.config import TableConfig
from obflow.events import ChangeEvent, TableSchema
from obflow_dev.sample import SAMPLE_COLUMNS, change_stream

BATCH = 8000
SHAPE = TableSchema(version="v1", columns=tuple((c["name"], c["type"]) for c in SAMPLE_COLUMNS))
ADDED = TableSchema(version="v2", columns=(*SHAPE.columns, ("C2", "NUMBER(10,0)")))


def shaped(events: list[ChangeEvent], shape: TableSchema) -> list[ChangeEvent]:
    return [e.model_copy(update={"source": e.source.model_copy(update={"table_schema": shape})}) for e in events]


def batches(events: list[ChangeEvent]) -> list[pa.Array]:
    payloads = [e.to_json().decode() for e in events]
    return [pa.array(payloads[start : start + BATCH], pa.string()) for start in range(0, len(payloads), BATCH)]


def rate(map_batch: Callable[[pa.Array], object], data: list[pa.Array], rounds: int = 3) -> float:
    best = 0.0
    for _ in range(rounds):
        started = time.process_time()
        for batch in data:
            map_batch(batch)
        best = max(best, sum(len(b) for b in data) / (time.process_time() - started))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=80_000)
    args = parser.parse_args(argv)
    events = change_stream(args.records, rows=args.records // 4)
    table = TableConfig(name="TRADE.ORDERS", columns=SAMPLE_COLUMNS)
    following = FollowingMapping()
    changing = FollowingMapping()
    half = BATCH // 2
    mixed = []
    for start in range(0, len(events), BATCH):
        mixed += shaped(events[start : start + half], SHAPE) + shaped(events[start + half : start + BATCH], ADDED)
    with_shape = batches(shaped(events, SHAPE))
    stages = [
        ("configured columns (baseline)", rate(TableMapping(table).rows, with_shape)),
        ("configured columns, events without their shape", rate(TableMapping(table).rows, batches(events))),
        ("columns follow the table, steady shape", rate(following.runs, with_shape)),
        ("columns follow the table, a change per batch", rate(changing.runs, batches(mixed))),
        ("events without their shape: JSON text images", rate(TableMapping(None).rows, batches(events))),
    ]
    print(f"Mapping {args.records:,} changes in batches of {BATCH:,}, records per CPU-second")
    print(f"machine: {machine()}")
    print(f"{'stage':48} {'rec/CPU-s':>12} {'ratio':>7}")
    for name, value in stages:
        print(f"{name:48} {value:12,.0f} {value / stages[0][1]:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
