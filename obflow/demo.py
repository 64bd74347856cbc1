"""``obflow demo``: the largest real slice of the pipeline that exists so far, end to end.

Today that slice is: change envelopes (a realistic INSERT/UPDATE/DELETE stream) → the producer →
the DataHub emulator, running as its own process and speaking DataHub's protocol to the unmodified
pydatahub SDK, with injected put failures → the consumer reading every shard back → a check that
every change arrived exactly once and in per-row commit order. The database capture and the Flink
job exist (``obflow capture run``, ``obflow job run``) and are wired in by the local end-to-end issue;
the summary says what ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from obflow.config import RetryConfig, load_config
from obflow.datahub.client import ensure_change_topic, make_client
from obflow.datahub.consumer import ShardReader, decode_events
from obflow.datahub.emulator import start_process
from obflow.datahub.producer import Producer
from obflow.events import ChangeEvent
from obflow.log import setup_logging
from obflow.sample import change_stream

BATCH = 500
DEMO_RETRY_INTERVAL = 0.2


def _row_histories(events: list[ChangeEvent]) -> dict[tuple[str, str], list[str]]:
    rows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        rows[(event.source.qualified_table, event.key_json)].append(event.event_id)
    return rows


def _send(producer: Producer, events: list[ChangeEvent]) -> tuple[float, int]:
    """Send ``events`` in batches with a progress bar; (seconds, retries)."""
    started = time.perf_counter()
    retries = 0
    for start in range(0, len(events), BATCH):
        retries += producer.send(events[start : start + BATCH]).retries
        done = min(start + BATCH, len(events))
        bar = "#" * (30 * done // len(events))
        print(f"\r  sending  [{bar:30}] {done}/{len(events)} changes, {retries} retries", end="", flush=True)
    print()
    return time.perf_counter() - started, retries


def _read_back(producer: Producer) -> tuple[list[ChangeEvent], float]:
    started = time.perf_counter()
    received: list[ChangeEvent] = []
    for shard in producer.shard_ids:
        for batch in ShardReader(producer.client, producer.project, producer.topic, shard).read_all():
            received += decode_events(batch.records)
    return received, time.perf_counter() - started


def _verify(sent: list[ChangeEvent], received: list[ChangeEvent]) -> dict[str, bool]:
    ids = [e.event_id for e in received]
    return {
        "exactly once": sorted(ids) == sorted(e.event_id for e in sent) and len(set(ids)) == len(ids),
        "per-row commit order": _row_histories(received) == _row_histories(sent),
        "content intact": {e.event_id: e for e in received} == {e.event_id: e for e in sent},
    }


def run_demo(rows: int = 2000, shards: int = 4, out_dir: str | Path | None = None) -> int:
    out = Path(out_dir or "demo-output").resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / f"datahub-{int(time.time())}"
    emulator_log = out / "datahub-emulator.log"
    base = load_config(None)
    log_file = (out / "demo.log").open("a", encoding="utf-8")
    setup_logging("INFO", "json", log_file)
    print("obflow demo: change envelopes -> producer -> DataHub emulator (own process, real SDK) -> consumer")
    print("Not yet wired into the demo (issue 6): database capture and the Flink job, which run on their own")
    print("as `obflow capture run` and `obflow job run`; see README.")
    proc, endpoint = start_process(data_dir, log_path=emulator_log)
    try:
        # Retries 0.2s apart instead of the default 2s (R1.5), so the demo finishes quickly.
        retry = RetryConfig(attempts=3, interval=DEMO_RETRY_INTERVAL)
        config = base.datahub.model_copy(update={"endpoint": endpoint, "shards": shards, "retry": retry})
        client = make_client(config)
        ensure_change_topic(client, config)
        # DataHub rejects 10 % of records, each at most twice: the producer's retries must recover all.
        faults = {"put_record_failure_rate": 0.1, "put_record_max_failures": 2, "seed": 1}
        httpx.post(f"{endpoint}/_admin/faults", json=faults, timeout=5).raise_for_status()

        events = change_stream(rows, rows=max(rows // 5, 1), commit_ts_ms=int(time.time() * 1000))
        producer = Producer(client, config.project, config.topic, config.retry, batch_size=BATCH)
        send_seconds, retries = _send(producer, events)
        received, read_seconds = _read_back(producer)
        checks = _verify(events, received)

        ops = Counter(e.op for e in events)
        pauses = retries * DEMO_RETRY_INTERVAL
        read_rate = len(received) / read_seconds
        mix = f"{ops['c']} inserts, {ops['u']} updates (before+after), {ops['d']} deletes"
        print(f"changes  {len(events)}: {mix}")
        print(f"sent     in {send_seconds:.1f}s to {shards} shards; {retries} retries ({pauses:.1f}s paused)")
        print(f"read     {len(received)} back in {read_seconds:.2f}s ({read_rate:,.0f}/s)")
        print("checks   " + ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()))
        print(f"data     {data_dir}")
        print(f"logs     {out / 'demo.log'} (a datahub.put_failed event per retry), {emulator_log}")
        return 0 if all(checks.values()) else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping")
        return 130
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        setup_logging()
        log_file.close()
