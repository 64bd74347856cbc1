"""``obflow demo``: the whole pipeline on this machine, on embedded defaults, and the proof that it works.

A real OceanBase engine (seekdb) with a sample schema → ``obflow capture run`` (change-log triggers) →
the DataHub emulator (its own process, spoken to by the unmodified pydatahub SDK) → ``obflow job run``
(PyFlink mini-cluster) → files. A load generator writes INSERT/UPDATE/DELETE while a live line shows
the flow; at the end every committed output row is checked against the load's history: each change
exactly once, each row's changes in commit order. The components are supervised processes
(obflow_dev.supervise) with their logs in ``<out>/logs``; the end-to-end tests reuse :class:`LocalPipeline`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from obflow.config import ObflowConfig
from obflow.log import Fault, log_fault, setup_logging
from obflow.net import free_port
from obflow_dev.loadgen import COLUMNS, KEYS, History, LoadGenerator, RowKey, create_schema
from obflow_dev.localdb import Engine
from obflow_dev.supervise import Component, Supervisor, obflow_command, readyz

DATABASE = "shop"
DEMO_CHECKPOINT_INTERVAL = "5s"
"""The demo checkpoints every 5 s (the default is 5 min)."""
DEMO_ROLL_SPAN = "2s"
"""Output files roll every 2 s (output.rolling.max_span, 1 h by default), so they appear within seconds."""
JOB_METRICS = "flink_taskmanager_job_task_operator_obflow_"
"""The job's own metrics on Flink's Prometheus reporter (flink_job.functions)."""

log = logging.getLogger("obflow.demo")


class LocalPipeline:
    """seekdb, DataHub emulator, capture agent and Flink job as supervised local processes."""

    def __init__(
        self, out: Path, fmt: str = "parquet", shards: int = 4, parallelism: int = 2, faults: bool = True
    ) -> None:
        self.out = out
        self.faults = faults
        self.fmt, self.shards, self.parallelism = fmt, shards, parallelism
        self.supervisor = Supervisor(out / "logs")
        self.engine = Engine("seekdb", out / "seekdb")
        self.ports = {name: free_port() for name in ("datahub", "capture", "job", "flink_metrics")}
        self.config_path = out / "pipeline.yaml"
        self.config = self._write_config()

    def _write_config(self) -> ObflowConfig:
        data: dict[str, Any] = {
            "source": {
                "engine": "oceanbase", "mode": "mysql", "host": "127.0.0.1", "port": self.engine.port,
                "user": "root", "database": DATABASE,
                "tables": [{"name": table, "columns": columns} for table, columns in COLUMNS.items()],
                "heartbeat_interval": "2s", "reconnect_max_backoff": "2s",
            },
            "datahub": {
                "endpoint": f"http://127.0.0.1:{self.ports['datahub']}", "shards": self.shards,
                "retry": {"attempts": 3, "interval": "500ms"},
            },
            "capture": {"state_dir": str(self.out / "state" / "capture"), "poll_interval": "100ms",
                        "http_port": self.ports["capture"]},
            "flink": {"parallelism": self.parallelism, "restart_delay": "2s", "restart_attempts": 30,
                      "metrics_port": str(self.ports["flink_metrics"])},
            "checkpoint": {"interval": DEMO_CHECKPOINT_INTERVAL, "dir": str(self.out / "state" / "checkpoints"),
                           "savepoint_dir": str(self.out / "state" / "savepoints")},
            "output": {"format": self.fmt, "path": str(self.out / "output"),
                       "dead_letter_path": str(self.out / "output" / "_dead_letter"),
                       "metrics_port": self.ports["job"],
                       "rolling": {"max_span": DEMO_ROLL_SPAN}},
            "logging": {"format": "json"},
        }  # fmt: skip
        self.out.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
        return ObflowConfig(**data)

    def start_database(self) -> None:
        self.engine.base_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor.start(Component("seekdb", self.engine.command(), self.engine.accepts_connections))
        with self.engine.connect() as conn:
            create_schema(conn, DATABASE)

    def start(self) -> None:
        """Everything, in order, each ready before the next starts."""
        self.start_database()
        self._run_cli("capture", "install")
        emulator = obflow_command(
            "datahub-emulator", "--port", str(self.ports["datahub"]), "--data-dir", str(self.out / "datahub"),
            *(["--admin"] if self.faults else []),
        )  # fmt: skip
        self.supervisor.start(Component("datahub", emulator, readyz(self.ports["datahub"], "/healthz")))
        if self.faults:
            # DataHub rejects 5 % of the records put, each at most twice: the capture agent retries them
            faults = {"put_record_failure_rate": 0.05, "put_record_max_failures": 2, "seed": 1}
            httpx.post(f"{self.config.datahub.endpoint}/_admin/faults", json=faults, timeout=5).raise_for_status()
        config = str(self.config_path)
        capture = Component(
            "capture", obflow_command("capture", "run", "--config", config), readyz(self.ports["capture"])
        )
        self.supervisor.start(capture)
        job = Component("job", obflow_command("job", "run", "--config", config), readyz(self.ports["job"]))
        job.env = {"FLINK_LOG_DIR": str(self.out / "logs" / "flink")}
        job.stop_timeout = 90
        self.supervisor.start(job, timeout=180)

    def _run_cli(self, *args: str) -> None:
        import subprocess

        result = subprocess.run(
            [*obflow_command(*args), "--config", str(self.config_path)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"obflow {' '.join(args)} failed: {result.stderr.strip()[-2000:]}")

    def load(self, total: int, rate: float, duration: float | None = None) -> LoadGenerator:
        generator = LoadGenerator(lambda: self.engine.connect(DATABASE), total, rate, duration)
        generator.start()
        return generator

    def stop(self) -> None:
        self.supervisor.stop_all()

    def metrics(self, component: str, combine: Any = sum) -> dict[str, float]:
        """A component's /metrics, each sample name with its values combined (summed; empty when unreachable)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"http://127.0.0.1:{self.ports[component]}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        values: dict[str, list[float]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                values[sample.name].append(sample.value)
        return {name: float(combine(found)) for name, found in values.items()}


@dataclass
class Verification:
    rows: int = 0
    expected: int = 0
    duplicates: int = 0
    missing: int = 0
    out_of_order: list[RowKey] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    files: int = 0

    @property
    def ok(self) -> bool:
        return self.rows == self.expected and not self.duplicates and not self.missing and not self.out_of_order

    def log_inconsistencies(self) -> None:
        """A ``consistency.mismatch`` fault event (R9.5) when the output disagrees with the source."""
        if self.ok:
            return
        what = (f"the output disagrees with what the load committed: {self.rows} rows for {self.expected} "
                f"changes, {self.duplicates} duplicates, {self.missing} missing, {len(self.out_of_order)} rows "
                f"out of order (first: {self.out_of_order[:3]})")  # fmt: skip
        log_fault(log, Fault.INCONSISTENCY_DETECTED, what, level=logging.ERROR, rows=self.rows,
                  expected=self.expected, duplicates=self.duplicates, missing=self.missing,
                  out_of_order=len(self.out_of_order))  # fmt: skip


def verify(config: ObflowConfig, history: History) -> Verification:
    """The committed output against the load's history: every change once, each row in commit order.

    A row's changes, ordered by their capture position, must be exactly the row's history (op and
    version, in the order the load committed them); and inside every file a row's changes must
    already stand in that order (the order the job wrote them).
    """
    from flink_job.output import read_output

    result = Verification(expected=history.changes)
    by_row: dict[RowKey, list[tuple[int, str, int]]] = defaultdict(list)
    ids: list[str] = []
    for table_name, file, rows in read_output(config):
        result.files += 1
        table = table_name.rpartition(".")[2]
        visible_at = file.stat().st_mtime
        last_in_file: dict[RowKey, int] = {}
        for row in rows:
            row_key = (table, tuple(int(row[column]) for column in KEYS[table]))
            position = int(row["_position"])
            if position < last_in_file.get(row_key, -1) and row_key not in result.out_of_order:
                result.out_of_order.append(row_key)
            last_in_file[row_key] = position
            by_row[row_key].append((position, str(row["_op"]), int(row["version"])))
            ids.append(str(row["_event_id"]))
            result.latencies.append(max(visible_at - row["_commit_ts"].timestamp(), 0.0))
    result.rows = len(ids)
    result.duplicates = len(ids) - len(set(ids))
    for row_key, expected in history.rows.items():
        seen = [(op, version) for _, op, version in sorted(by_row.get(row_key, []))]
        if seen != expected:
            if sorted(seen) == sorted(expected):
                result.out_of_order.append(row_key)
            else:
                result.missing += max(len(expected) - len(seen), 0) or 1
    return result


class LiveView:
    """One status line: rewritten in place on a terminal, printed every 5 s otherwise (logs, CI)."""

    def __init__(self, pipeline: LocalPipeline, generator: LoadGenerator) -> None:
        self.pipeline, self.generator = pipeline, generator
        self.started = time.monotonic()
        self.tty = sys.stdout.isatty()
        self.last_print = 0.0

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not (self.tty or final or now - self.last_print >= 5):
            return
        self.last_print = now
        print(("\r" if self.tty else "") + self.line(), end="\n" if final or not self.tty else "", flush=True)

    def line(self) -> str:
        pipeline, generator = self.pipeline, self.generator
        elapsed = max(time.monotonic() - self.started, 0.001)
        written = generator.history.changes
        captured = pipeline.metrics("capture").get("obflow_capture_changes_total", 0.0)
        job = pipeline.metrics("flink_metrics")
        committed = job.get(f"{JOB_METRICS}table_output_rows", 0.0)
        files = job.get(f"{JOB_METRICS}table_output_files", 0.0)
        last = pipeline.metrics("flink_metrics", max).get(f"{JOB_METRICS}output_last_commit_timestamp_seconds", 0.0)
        commit = f"{time.time() - last:.0f}s ago" if last else "none yet"
        bar = "#" * int(30 * min(committed / max(generator.total, 1), 1))
        return (
            f"[{bar:30}] written {written} ({written / elapsed:.0f}/s)  captured {captured:.0f}  "
            f"committed {committed:.0f} in {files:.0f} files  lag {max(written - committed, 0):.0f}  "
            f"last file committed {commit} "
        )


def run_demo(
    rows: int = 3000,
    rate: float = 100.0,
    duration: float | None = None,
    fmt: str = "parquet",
    out_dir: str | Path | None = None,
    keep_running: bool = False,
) -> int:
    out = Path(out_dir or f"demo-output/{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    if out.exists() and any(out.iterdir()):
        print(f"{out} is not empty; pass another --out (or remove it)", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log_file = (out / "logs" / "demo.log").open("a")
    setup_logging("INFO", "json", log_file)
    pipeline = LocalPipeline(out, fmt)
    print(f"obflow demo in {out}")
    print("  seekdb (OceanBase engine) -> capture agent -> DataHub emulator -> PyFlink job -> "
          f"{fmt} files rolled every {DEMO_ROLL_SPAN} (default 1 h); DataHub rejects "
          "5 % of the puts and the capture agent retries them")  # fmt: skip
    generator: LoadGenerator | None = None
    try:
        step("starting seekdb, capture, DataHub emulator and the Flink job (about 30 s)", pipeline.start)
        generator = pipeline.load(rows, rate, duration)
        started = time.monotonic()
        view = LiveView(pipeline, generator)
        while generator.is_alive():
            view.show()
            time.sleep(0.5)
        if generator.error:
            raise RuntimeError(f"the load generator failed: {generator.error}")
        load_seconds = time.monotonic() - started
        deadline = time.monotonic() + 120
        while pipeline.metrics("flink_metrics").get(f"{JOB_METRICS}table_output_rows", 0.0) < generator.history.changes:
            view.show()
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        view.show(final=True)
        total_seconds = time.monotonic() - started
        result = verify(pipeline.config, generator.history)
        result.log_inconsistencies()
        summary(pipeline, generator.history, result, load_seconds, total_seconds)
        if keep_running:
            print("keep running: the pipeline is up; Ctrl-C stops it")
            threading.Event().wait()
        return 0 if result.ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every component")
        return 130
    except RuntimeError as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if generator is not None:
            generator.stop_event.set()
        with contextlib.suppress(KeyboardInterrupt):
            pipeline.stop()
        setup_logging()
        log_file.close()


def step(what: str, action: Any) -> None:
    print(f"  {what} ...", end="", flush=True)
    begun = time.monotonic()
    action()
    print(f" done in {time.monotonic() - begun:.0f}s")


def summary(pipeline: LocalPipeline, history: History, result: Verification, load_s: float, total_s: float) -> None:
    ops = history.ops
    latencies = np.array(result.latencies or [0.0])
    print(f"changes    {history.changes} written in {load_s:.0f}s ({history.changes / max(load_s, 0.001):.0f}/s): "
          f"{ops['c']} inserts, {ops['u']} updates, {ops['d']} deletes on {len(COLUMNS)} tables")  # fmt: skip
    print(f"committed  {result.rows} rows in {result.files} {pipeline.fmt} files, all in {total_s:.0f}s")
    print(f"latency    database commit -> row in a committed file: p50 {np.percentile(latencies, 50):.1f}s, "
          f"p99 {np.percentile(latencies, 99):.1f}s (files roll every {DEMO_ROLL_SPAN})")  # fmt: skip
    checks = {
        "every change exactly once": result.rows == result.expected and not result.duplicates and not result.missing,
        "per-row commit order": not result.out_of_order,
    }
    print("checks     " + ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items()))
    if not result.ok:
        print(f"           expected {result.expected}, got {result.rows}; {result.duplicates} duplicates, "
              f"{result.missing} missing, {len(result.out_of_order)} rows out of order")  # fmt: skip
    output = Path(pipeline.config.output.path)
    print(f"files      {output}/<table>/<date>/<hour>/...")
    reader = {"parquet": "pyarrow.parquet.read_table(path)", "csv": "pyarrow.csv.read_csv(path)",
              "json": "one JSON object per line"}[pipeline.fmt]  # fmt: skip
    print(f"read them  {reader}, or `obflow output show --config {pipeline.config_path}`")
    print(f"logs       {pipeline.out / 'logs'}; config {pipeline.config_path}")
