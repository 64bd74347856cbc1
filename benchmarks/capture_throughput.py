"""Change capture, database → DataHub: sustained rate and commit→DataHub latency, on seekdb and MariaDB.

For each engine, in the same run:

1. baseline: the rate the database sustains for the writes alone (transactions of 50 inserts),
   with no capture installed;
2. the same writes with the change-log triggers installed (ratio: the trigger overhead);
3. capture: a writer process paces INSERT+UPDATE changes at ``--rate`` for ``--seconds`` while the
   capture agent (``changelog`` method; ``binlog`` too on MariaDB) ships them to the DataHub emulator
   (its own process). Reported: changes/s captured, whether capture kept up (ratio captured/written
   rate), and latency from the change's commit time to DataHub's acceptance time, p50 and p99.

Run: ``python -m benchmarks.capture_throughput [--rate 5000 --seconds 10]`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import machine
from capture_agent.agent import CaptureAgent
from capture_agent.install import apply_ddl, change_log_ddl
from obflow.config import ObflowConfig
from obflow.datahub.client import make_client
from obflow.datahub.consumer import FetchedRecord, ShardReader
from obflow_dev.emulator import start_process
from obflow_dev.localdb import Engine

DDL = "CREATE TABLE bench (id BIGINT PRIMARY KEY, status VARCHAR(20), amount DECIMAL(12,2), created DATETIME(6))"
# All values as parameters, so executemany sends one multi-row INSERT per transaction.
INSERT = "INSERT INTO bench VALUES (%s, %s, %s, %s)"
ROWS_PER_TX = 50


@dataclass
class Result:
    engine: str
    stage: str
    rate: float
    ratio: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


def _rows(first: int, end: int) -> list[tuple[object, ...]]:
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    return [(i, "NEW", "12.50", now) for i in range(first, end)]


def _write(engine: Engine, database: str, first_id: int, count: int) -> float:
    """Seconds to insert ``count`` rows in transactions of ROWS_PER_TX."""
    with engine.connect(database) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for start in range(first_id, first_id + count, ROWS_PER_TX):
            cur.execute("BEGIN")
            cur.executemany(INSERT, _rows(start, min(start + ROWS_PER_TX, first_id + count)))
            cur.execute("COMMIT")
        return time.perf_counter() - started


def _paced_writer(port: int, database: str, first_id: int, rate: int, seconds: float) -> None:
    """Runs in its own process: inserts then updates, ROWS_PER_TX changes per transaction, at ``rate``."""
    engine = Engine("any", Path("/nonexistent"))
    engine.port = port
    with engine.connect(database) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        done = 0
        next_id = first_id
        while done < rate * seconds:
            cur.execute("BEGIN")
            if done % (ROWS_PER_TX * 4) < ROWS_PER_TX * 3:
                cur.executemany(INSERT, _rows(next_id, next_id + ROWS_PER_TX))
                next_id += ROWS_PER_TX
            else:
                cur.execute(
                    "UPDATE bench SET status = 'PAID' WHERE id >= %s AND id < %s",
                    (next_id - ROWS_PER_TX, next_id),
                )
            cur.execute("COMMIT")
            done += ROWS_PER_TX
            ahead = done / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)


def _config(engine: Engine, database: str, endpoint: str, state: Path, method: str) -> ObflowConfig:
    return ObflowConfig(
        source={"engine": "oceanbase" if engine.kind == "seekdb" else "mariadb", "mode": "mysql",
                "host": "127.0.0.1", "port": engine.port, "user": "root", "database": database, "tables": ["bench"]},
        datahub={"endpoint": endpoint, "topic": f"bench_{database}", "shards": 4},
        capture={"method": method, "state_dir": str(state), "poll_interval": "20ms", "http_port": 0,
                 "snapshot": False, "batch_size": 2000},
    )  # fmt: skip


def _capture(
    engine: Engine, database: str, endpoint: str, state: Path, method: str, rate: int, seconds: float
) -> Result:
    config = _config(engine, database, endpoint, state, method)
    agent = CaptureAgent(config)
    agent.start()
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    expected = int(rate * seconds)
    writer = multiprocessing.Process(target=_paced_writer, args=(engine.port, database, 10_000_000, rate, seconds))
    started = time.time()
    writer.start()
    writer.join()
    written_rate = expected / (time.time() - started)
    client = make_client(config.datahub)
    records: list[FetchedRecord] = []
    readers = [ShardReader(client, config.datahub.project, config.datahub.topic, str(s)) for s in range(4)]
    deadline = time.time() + 120
    while len(records) < expected and time.time() < deadline:
        for reader in readers:
            records += reader.fetch(1000).records
        time.sleep(0.05)
    agent.stop()
    runner.join(30)
    agent.close()
    if len(records) < expected:
        raise RuntimeError(f"captured {len(records)} of {expected} changes")
    last_accepted = max(r.system_time for r in records) / 1000
    latencies = sorted(r.system_time - int(r.values[5]) for r in records)
    captured_rate = len(records) / (last_accepted - started)
    return Result(
        engine.kind,
        f"capture, {method}, {written_rate:,.0f}/s written",
        captured_rate,
        ratio=captured_rate / written_rate,
        p50_ms=statistics.median(latencies),
        p99_ms=latencies[int(len(latencies) * 0.99) - 1],
    )


def run_engine(kind: str, rate: int, seconds: float, rows: int) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(kind, Path(tmp) / kind).start()
        proc, endpoint = start_process(str(Path(tmp) / "datahub"))
        try:
            methods = ["changelog", "binlog"] if kind == "mariadb" else ["changelog"]
            for method in methods:
                database = f"bench_{method}"
                with engine.connect() as conn, conn.cursor() as cur:
                    cur.execute(f"CREATE DATABASE {database}")
                    cur.execute(f"USE {database}")
                    cur.execute(DDL)
                if method == "changelog":
                    baseline = rows / _write(engine, database, 0, rows)
                    results.append(Result(kind, "database writes, no capture", baseline, ratio=1.0))
                    config = _config(engine, database, endpoint, Path(tmp) / "state-ddl", method)
                    apply_ddl(config, change_log_ddl(config))
                    with_triggers = rows / _write(engine, database, rows, rows)
                    results.append(
                        Result(kind, "database writes, change-log triggers", with_triggers, with_triggers / baseline)
                    )
                    with engine.connect(database) as conn, conn.cursor() as cur:
                        cur.execute("DELETE FROM bench__obflow_log")
                results.append(
                    _capture(engine, database, endpoint, Path(tmp) / f"state-{method}", method, rate, seconds)
                )
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
            engine.kill()
    return results


def report(results: list[Result], rate: int, seconds: float) -> None:
    offered = f"{rate} changes/s offered for {seconds:g}s, {ROWS_PER_TX} per transaction"
    print(f"Capture, database -> DataHub emulator: {offered}")
    print(f"machine: {machine()}")
    print(f"{'engine':8} {'stage':40} {'changes/s':>10} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        p50 = f"{r.p50_ms:.0f}" if r.p50_ms is not None else ""
        p99 = f"{r.p99_ms:.0f}" if r.p99_ms is not None else ""
        print(f"{r.engine:8} {r.stage:40} {r.rate:10,.0f} {ratio:>7} {p50:>8} {p99:>8}")
    print("ratio: triggers = write rate with triggers / without; capture = captured rate / written rate (1.0 keeps up)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rows", type=int, default=20_000, help="rows for the write-rate baseline")
    parser.add_argument("--engines", default="seekdb,mariadb")
    args = parser.parse_args(argv)
    results = [r for kind in args.engines.split(",") for r in run_engine(kind, args.rate, args.seconds, args.rows)]
    report(results, args.rate, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
