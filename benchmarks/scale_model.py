"""What a daily volume needs: DataHub shards, TaskManager cores and capture agents, and how long a
backlog takes to work off, from per-core rates measured on this machine and DataHub's published limits.

The model (docs/scale.md explains each line):

- a record's size on the wire: the sample table's change envelope, encoded as the capture agent puts
  it (measured here from obflow_dev.sample), or ``--record-bytes``;
- the rate: ``--records-per-day`` spread evenly, and at ``--peak`` times that for the busiest hour;
- shards: a shard takes at most 5 MB/s and 2,000 put requests/s (a request at most 10,000 records
  and 4 MB; the capture agent puts ``datahub.batch_size`` records a request), at most 256 a topic;
  the peak rate decides, with ``--headroom`` spare;
- job cores: the peak rate over the job's records per CPU-second (``--job-rate``: measured with
  ``python -m benchmarks.job_throughput``), with the same headroom; one reading subtask per core,
  so at least one shard per subtask;
- capture agents: the peak rate over one agent's sustained rate (``--capture-rate``: measured with
  ``python -m benchmarks.capture_throughput``, seekdb, change-log method);
- a backlog (``--backlog`` records, e.g. after an outage): worked off at the job's capacity less the
  changes that keep arriving meanwhile (at the daily mean).

Run: ``python -m benchmarks.scale_model [--records-per-day 50e9] [--job-rate 60000] [--capture-rate 3371]``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

from obflow.config import DataHubConfig
from obflow_dev.sample import change_stream

SHARD_BYTES_PER_S = 5 * 1000**2
SHARD_REQUESTS_PER_S = 2000
REQUEST_RECORDS = 10_000
REQUEST_BYTES = 4 * 1000**2
TOPIC_SHARDS = 256
DAY_S = 86_400


def record_bytes() -> int:
    """The mean size of the sample table's change envelopes as the capture agent puts them (TUPLE values)."""
    events = change_stream(2000, rows=400)
    return round(sum(sum(len(str(v)) for v in e.to_datahub_values() if v is not None) for e in events) / len(events))


@dataclass(frozen=True)
class Needs:
    mean_rate: float
    peak_rate: float
    bytes_per_record: int
    records_per_request: int
    shards_by_bytes: int
    shards_by_requests: int
    shards: int
    topics: int
    job_cores: int
    capture_agents: int
    backlog_hours_live: float
    backlog_hours_alone: float


def needs(
    records_per_day: float,
    bytes_per_record: int,
    job_rate: float,
    capture_rate: float,
    peak: float = 2.0,
    headroom: float = 0.3,
    backlog: float = 50e9,
    batch_size: int = DataHubConfig.model_fields["batch_size"].default,
) -> Needs:
    mean = records_per_day / DAY_S
    top = mean * peak
    per_request = max(min(batch_size, REQUEST_RECORDS, REQUEST_BYTES // bytes_per_record), 1)
    by_bytes = math.ceil(top * bytes_per_record * (1 + headroom) / SHARD_BYTES_PER_S)
    by_requests = math.ceil(top / per_request * (1 + headroom) / SHARD_REQUESTS_PER_S)
    cores = math.ceil(top * (1 + headroom) / job_rate)
    shards = max(by_bytes, by_requests, cores)  # a reading subtask per core, each with a shard at least
    capacity = cores * job_rate
    return Needs(
        mean_rate=mean,
        peak_rate=top,
        bytes_per_record=bytes_per_record,
        records_per_request=per_request,
        shards_by_bytes=by_bytes,
        shards_by_requests=by_requests,
        shards=shards,
        topics=math.ceil(shards / TOPIC_SHARDS),
        job_cores=cores,
        capture_agents=math.ceil(top * (1 + headroom) / capture_rate),
        backlog_hours_live=backlog / (capacity - mean) / 3600 if capacity > mean else math.inf,
        backlog_hours_alone=backlog / capacity / 3600,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records-per-day", type=float, default=50e9)
    parser.add_argument("--record-bytes", type=int, default=0, help="default: measured from the sample table")
    parser.add_argument("--job-rate", type=float, default=60_000, help="job records per CPU-second")
    parser.add_argument("--capture-rate", type=float, default=3_371, help="records/s one capture agent sustains")
    parser.add_argument("--peak", type=float, default=2.0, help="busiest hour over the daily mean")
    parser.add_argument("--headroom", type=float, default=0.3, help="spare capacity over the peak")
    parser.add_argument("--backlog", type=float, default=50e9, help="records to work off")
    args = parser.parse_args(argv)
    size = args.record_bytes or record_bytes()
    n = needs(args.records_per_day, size, args.job_rate, args.capture_rate, args.peak, args.headroom, args.backlog)
    rows = [
        ("records a day", f"{args.records_per_day:,.0f}"),
        ("mean rate, records/s", f"{n.mean_rate:,.0f}"),
        (f"peak rate (x{args.peak:g}), records/s", f"{n.peak_rate:,.0f}"),
        ("bytes a record on the wire", f"{n.bytes_per_record:,}"),
        ("records a put request", f"{n.records_per_request:,}"),
        (f"shards for 5 MB/s each (+{args.headroom:.0%})", f"{n.shards_by_bytes:,}"),
        (f"shards for 2,000 requests/s each (+{args.headroom:.0%})", f"{n.shards_by_requests:,}"),
        ("shards (the larger, and one a core)", f"{n.shards:,}"),
        ("topics (256 shards each)", f"{n.topics:,}"),
        (f"TaskManager cores at {args.job_rate:,.0f} rec/CPU-s", f"{n.job_cores:,}"),
        (f"capture agents at {args.capture_rate:,.0f} rec/s", f"{n.capture_agents:,}"),
        (f"{args.backlog:,.0f} backlog, live traffic on, hours", f"{n.backlog_hours_live:,.1f}"),
        (f"{args.backlog:,.0f} backlog, nothing else arriving, hours", f"{n.backlog_hours_alone:,.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'what':{width}}  value")
    for name, value in rows:
        print(f"{name:{width}}  {value:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
