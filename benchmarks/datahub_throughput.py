"""DataHub put/get throughput through the real pydatahub SDK against the emulator, JSON vs PB.

The emulator runs as its own process (as in the demo and the tests), so client and server do not
share an interpreter. Baseline, measured in the same run on the same records: the SDK's client-side
cost alone — building the records and encoding the request body, no network, no emulator. The
ratio ``put / client-side`` near 1 means the client is the limit, not the emulator.

Run: ``python -m benchmarks.datahub_throughput [--records N]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

import orjson
from datahub.models import TupleRecord
from datahub.models.params import (
    GetPBRecordsRequestParams,
    PutPBRecordsRequestParams,
    PutRecordsRequestParams,
)

from benchmarks.common import machine
from obflow.config import DataHubConfig, RetryConfig
from obflow.datahub.client import change_topic_schema, ensure_change_topic, make_client
from obflow.datahub.consumer import ShardReader, decode_events, decode_payloads
from obflow.events import ChangeEvent
from obflow_dev.emulator import start_process
from obflow_dev.emulator.routes import dispatch
from obflow_dev.emulator.server import DataHubEmulator
from obflow_dev.sample import change_stream

BATCH = 500


@dataclass
class Row:
    name: str
    records: int
    seconds: float
    megabytes: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def mb_rate(self) -> float:
        return self.megabytes / self.seconds


def _records(events: list[ChangeEvent]) -> list[TupleRecord]:
    schema = change_topic_schema()
    out = []
    for i, event in enumerate(events):
        record = TupleRecord(schema=schema, values=event.to_datahub_values())
        record.shard_id = str(i % 4)
        out.append(record)
    return out


def _emulator_capacity(protocol: str, records: list[TupleRecord]) -> tuple[float, float]:
    """Seconds the emulator spends answering the puts of ``records``, then gets of them all back,
    in-process: no HTTP, no client."""
    schema = change_topic_schema()
    with tempfile.TemporaryDirectory() as data_dir:
        emulator = DataHubEmulator(data_dir)
        emulator.store.create_project("obflow", "")
        fields = [{"name": f.name, "type": f.type.value} for f in schema.field_list]
        emulator.store.create_topic("obflow", "changes", "TUPLE", fields, 4, 7, "")
        params = PutPBRecordsRequestParams if protocol == "pb" else PutRecordsRequestParams
        headers = (
            {"Content-Type": "application/x-protobuf", "x-datahub-request-action": "pub"} if protocol == "pb" else {}
        )
        bodies = []
        for start in range(0, len(records), BATCH):
            content = params(records[start : start + BATCH]).content()
            bodies.append(content.encode() if isinstance(content, str) else bytes(content))
        started = time.perf_counter()
        for body in bodies:
            dispatch(emulator, "POST", "/projects/obflow/topics/changes/shards", body, headers)
        put_seconds = time.perf_counter() - started
        started = time.perf_counter()
        read = 0
        sub_headers = headers | {"x-datahub-request-action": "sub"}
        for shard in emulator.store.topic("obflow", "changes").shards:
            path = f"/projects/obflow/topics/changes/shards/{shard.shard_id}"
            for sequence in range(0, shard.end, 1000):
                cursor_body = orjson.dumps({"Action": "cursor", "Type": "SEQUENCE", "Sequence": sequence})
                cursor = dispatch(emulator, "POST", path, cursor_body, {})[1]["Cursor"]
                if protocol == "pb":
                    dispatch(
                        emulator,
                        "POST",
                        path,
                        bytes(GetPBRecordsRequestParams(cursor, 1000).content()),
                        sub_headers,
                    )
                else:
                    sub_body = orjson.dumps({"Action": "sub", "Cursor": cursor, "Limit": 1000})
                    dispatch(emulator, "POST", path, sub_body, {})
                read += min(1000, shard.end - sequence)
        get_seconds = time.perf_counter() - started
        assert read == len(records)
        emulator.store.close()
    return put_seconds, get_seconds


def run(count: int) -> list[Row]:
    events = change_stream(count, rows=count)
    payload_mb = sum(len(e.to_json()) for e in events) / 1e6
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as data_dir:
        proc, endpoint = start_process(data_dir)
        try:
            for protocol in ("json", "pb"):
                config = DataHubConfig(
                    endpoint=endpoint,
                    protocol=protocol,
                    topic=f"bench_{protocol}",
                    shards=4,
                    retry=RetryConfig(attempts=0, interval=0),
                )
                client = make_client(config)
                ensure_change_topic(client, config)

                started = time.perf_counter()
                records = _records(events)
                params = PutPBRecordsRequestParams if protocol == "pb" else PutRecordsRequestParams
                for start in range(0, count, BATCH):
                    params(records[start : start + BATCH]).content()
                rows.append(
                    Row(
                        f"SDK client side: build + encode ({protocol})",
                        count,
                        time.perf_counter() - started,
                        payload_mb,
                    )
                )

                put_seconds, get_seconds = _emulator_capacity(protocol, records)
                rows.append(Row(f"emulator put handling, in-process ({protocol})", count, put_seconds, payload_mb))
                rows.append(Row(f"emulator get handling, in-process ({protocol})", count, get_seconds, payload_mb))

                started = time.perf_counter()
                for start in range(0, count, BATCH):
                    result = client.put_records(config.project, config.topic, records[start : start + BATCH])
                    assert result.failed_record_count == 0
                rows.append(
                    Row(
                        f"put request through SDK ({protocol})",
                        count,
                        time.perf_counter() - started,
                        payload_mb,
                    )
                )

                started = time.perf_counter()
                fetched = []
                for shard in ("0", "1", "2", "3"):
                    reader = ShardReader(client, config.project, config.topic, shard)
                    for batch in reader.read_all(limit=1000):
                        fetched += batch.records
                rows.append(
                    Row(
                        f"get through SDK ({protocol})",
                        len(fetched),
                        time.perf_counter() - started,
                        payload_mb,
                    )
                )
                assert len(fetched) == count

            started = time.perf_counter()
            decode_payloads(fetched)
            rows.append(Row("decode payloads, orjson", count, time.perf_counter() - started, payload_mb))
            started = time.perf_counter()
            decode_events(fetched)
            rows.append(Row("decode + validate, ChangeEvent", count, time.perf_counter() - started, payload_mb))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
    return rows


def report(rows: list[Row], count: int) -> None:
    print(f"DataHub throughput: {count} change envelopes, {BATCH} per put, 4 shards, emulator as a process")
    print(f"machine: {machine()}")
    baseline = {r.name.split("(")[-1]: r.rate for r in rows if r.name.startswith("SDK client side")}
    print(f"{'stage':48} {'records/s':>11} {'MB/s':>7} {'µs/record':>10} {'vs client':>10}")
    for r in rows:
        proto = r.name.split("(")[-1] if "(" in r.name else ""
        ratio = f"{r.rate / baseline[proto]:.2f}" if proto in baseline else ""
        print(f"{r.name:48} {r.rate:11,.0f} {r.mb_rate:7.1f} {1e6 / r.rate:10.1f} {ratio:>10}")
    print(
        "vs client: rate / the SDK client-side rate of the same protocol. Above 1 for the emulator rows means"
        " the emulator outpaces a single SDK client; a request through the SDK (synchronous) pays both sides."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args(argv)
    report(run(args.records), args.records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
