"""The PyFlink job: DataHub change topic → duplicate removal → per-table output files, exactly once.

Data path (no Python source exists in PyFlink, so the source is built from parts that do):

1. an unbounded ticker (Table API ``datagen``) is broadcast to every subtask of the reading stage,
   which owns shard ``i`` of the change topic when it is subtask ``i mod parallelism`` (as evenly as
   the counts allow);
2. there, each shard's worker (flink_job.shard) does all the per-record work on each tick: reads what
   is new into Arrow, drops copies, decodes and maps each table's payloads once, and writes them to
   that table's output file, committing files as they roll; the shard's committed positions (a small
   file beside the output) say where to resume, so a restart, a restore or a rescale neither loses nor
   repeats a change (R9.2, docs/design/exactly-once.md). A row's changes are in one shard, read and
   written in order (R2.3, R9.4);
3. one small progress element per shard and poll carries event time (the newest commit time read)
   into bounded-out-of-orderness watermarks, and is then dropped.

The job runner (this module's ``run``, in the leading JobManager on a cluster) only submits the job and
watches it: it does no per-record work.

Run: ``obflow job run --config F [--from-savepoint PATH]`` (a local mini-cluster; SIGTERM stops it with a
savepoint), or ``flink run -py flink_job/job.py -- F`` on a cluster.
"""

from __future__ import annotations

import logging
import os
import signal
import site
import sys
import threading
import time
from pathlib import Path
from typing import Any

from datahub.exceptions import DatahubException
from requests.exceptions import RequestException

from flink_job.attach import GLOBALLY_TERMINAL, AttachedJob, duplicate_submission, rest_port
from obflow.config import ObflowConfig, load_config
from obflow.flink_conf import checkpointing, prometheus_reporter, restart_strategy
from obflow.health import HealthServer
from obflow.job_graph import POLLER_NAME, TICKS_TABLE, TICKS_TO_READERS
from obflow.log import Fault, log_event, log_fault
from obflow.runtime import refuse_start_without_datahub

log = logging.getLogger("obflow.flink")


def python_environment() -> None:
    """Make the embedded interpreter (thread mode) find this environment's packages."""
    paths = [*site.getsitepackages(), str(Path(__file__).resolve().parent.parent)]
    current = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([current] if current else [])])
    import pyflink

    # the local mini-cluster loads reporters (Prometheus) from the wheel's plugins folder
    os.environ.setdefault("FLINK_PLUGINS_DIR", str(Path(pyflink.__file__).parent / "plugins"))


def build(env: Any, config: ObflowConfig, config_path: str | None, shard_ids: list[str]) -> None:
    """Add the pipeline to ``env`` (a StreamExecutionEnvironment)."""
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.datastream.connectors.base import Sink
    from pyflink.java_gateway import get_gateway
    from pyflink.table import StreamTableEnvironment

    from flink_job.functions import CommitTime, ShardReaders

    table_env = StreamTableEnvironment.create(env)
    table_env.execute_sql(
        f"CREATE TEMPORARY TABLE {TICKS_TABLE} (n INT) WITH ("
        f"'connector' = 'datagen', 'rows-per-second' = '{max(int(1 / config.capture.poll_interval), 1)}', "
        # one ticker: a parallel one splits the rate, and at parallelism N each subtask would wait
        # N poll intervals between ticks while a checkpoint waits for its barrier
        "'scan.parallelism' = '1')"
    )
    # one subtask before the broadcast (from N subtasks it would connect N x N channels to the readers),
    # and one vertex: the ticker, its conversion to a stream and the map chained. The conversion's Java
    # stream is a plain DataStream, without setParallelism: its transformation has it
    ticks = table_env.to_data_stream(table_env.from_path(TICKS_TABLE))
    ticks._j_data_stream.getTransformation().setParallelism(1)
    ticks = ticks.map(lambda _: 0, output_type=Types.INT()).set_parallelism(1).name(TICKS_TO_READERS)
    # every reading subtask gets every tick and works the shards it owns (flink_job.functions)
    progress = (
        ticks.broadcast()
        .process(ShardReaders(config_path, shard_ids), output_type=Types.TUPLE([Types.STRING(), Types.LONG()]))
        .uid("obflow-shard-readers")
        .name(POLLER_NAME)
    )
    # with_idleness first: in PyFlink it returns a strategy without the Python timestamp assigner
    watermarks = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(int(config.flink.out_of_orderness * 1000)))
        .with_idleness(Duration.of_seconds(60))
        .with_timestamp_assigner(CommitTime())
    )
    # the watermark (Flink's currentOutputWatermark metric of this operator) is event-time progress;
    # the progress elements themselves are then dropped
    discard = Sink(get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
    (
        progress.assign_timestamps_and_watermarks(watermarks)
        .uid("obflow-commit-time")
        .name("event time: commit timestamp")
        .sink_to(discard)
        .uid("obflow-progress-end")
        .name("progress: discard")
    )


def environment(config: ObflowConfig, from_savepoint: str | None = None, local: bool = True) -> Any:
    """A StreamExecutionEnvironment configured from ``config`` (checkpoints, restarts, parallelism),
    restoring from ``from_savepoint`` when given; ``local``: in a mini-cluster in this process."""
    from pyflink.common import Configuration
    from pyflink.datastream import CheckpointingMode, StreamExecutionEnvironment

    python_environment()
    conf = Configuration()
    conf.set_string("python.execution-mode", config.flink.execution_mode)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    checkpoint = config.checkpoint
    settings = {
        **restart_strategy(config.flink.restart_attempts, config.flink.restart_delay),
        **checkpointing(
            storage_uri(checkpoint.dir), storage_uri(checkpoint.savepoint_dir), checkpoint.retained, checkpoint.backend
        ),
        "execution.checkpointing.tolerable-failed-checkpoints": str(checkpoint.tolerable_failures),
        "execution.checkpointing.timeout": f"{int(checkpoint.timeout * 1000)} ms",
        **prometheus_reporter(config.flink.metrics_port),
    }
    for key, value in settings.items():
        conf.set_string(key, value)
    if local:
        # a cluster loads the reporter from its plugins folder; a mini-cluster loads no plugins, but
        # finds the reporter factory on the classpath
        conf.set_string("pipeline.jars", prometheus_reporter_jar().as_uri())
    conf.set_string("pipeline.auto-watermark-interval", "200 ms")
    if from_savepoint:
        conf.set_string("execution.state-recovery.path", from_savepoint)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(config.flink.parallelism)
    env.set_max_parallelism(config.flink.max_parallelism)
    mode = (
        CheckpointingMode.EXACTLY_ONCE if config.checkpoint.mode == "exactly_once" else CheckpointingMode.AT_LEAST_ONCE
    )
    env.enable_checkpointing(int(config.checkpoint.interval * 1000), mode)
    return env


def storage_uri(location: str) -> str:
    """A checkpoint or savepoint location as Flink wants it: URIs as they are, paths made absolute."""
    return location if "://" in location else Path(location).resolve().as_uri()


def prometheus_reporter_jar() -> Path:
    import pyflink

    (jar,) = (Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar")
    return jar


def shard_ids_of(config: ObflowConfig) -> list[str]:
    from obflow.datahub.client import ensure_change_topic, make_client

    client = make_client(config.datahub)
    ensure_change_topic(client, config.datahub)
    return [str(s.shard_id) for s in client.list_shard(config.datahub.project, config.datahub.topic).shards]


def submit(
    config_path: str | None, config: ObflowConfig, from_savepoint: str | None = None, local: bool = True
) -> tuple[Any, int]:
    """Start the job without waiting; returns Flink's JobClient and the parallelism it runs with."""
    shard_ids = shard_ids_of(config)  # before the JVM starts: a DataHub that cannot be used stops it all
    env = environment(config, from_savepoint, local)
    build(env, config, config_path, shard_ids)
    try:
        return env.execute_async(config.flink.job_name), int(env.get_parallelism())
    except Exception as exc:
        job_id = None if local else duplicate_submission(exc)
        if job_id is None:
            raise
        log_event(log, "job.attached", f"job {job_id} was recovered by this JobManager: attaching to it", job=job_id)
        return AttachedJob(job_id, f"http://127.0.0.1:{rest_port()}"), int(env.get_parallelism())


def latest_savepoint_file(config: ObflowConfig) -> Path:
    return Path(config.checkpoint.savepoint_dir.removeprefix("file://")) / "LATEST"


def latest_restore_point(config: ObflowConfig) -> str | None:
    """The newest of the last savepoint (``LATEST``) and the newest complete retained checkpoint in a
    local ``checkpoint.dir``; None when there is neither (a first start)."""
    candidates: list[tuple[float, str]] = []
    latest = latest_savepoint_file(config)
    if latest.is_file():
        savepoint = latest.read_text().strip()
        local = Path(savepoint.removeprefix("file:"))
        if savepoint and (local / "_metadata").is_file():
            candidates.append(((local / "_metadata").stat().st_mtime, savepoint))
    local_dir = config.checkpoint.dir.removeprefix("file://")
    checkpoints = Path(local_dir)
    if "://" not in local_dir and checkpoints.is_dir():
        for metadata in checkpoints.glob("*/chk-*/_metadata"):
            candidates.append((metadata.stat().st_mtime, str(metadata.parent.resolve())))
    return max(candidates)[1] if candidates else None


def job_status(client: Any) -> str:
    """The job's status by name. Read from Java: PyFlink 2.3's ``JobStatus`` enum lacks Flink 2's
    INITIALIZING — the state a recovered job starts in — and raised KeyError right after every failover."""
    if isinstance(client, AttachedJob):
        return client.status()
    return str(client._j_job_client.getJobStatus().get().name())


def stop_with_savepoint(client: Any, target: str) -> str:
    """Stop the job with a savepoint in ``target``; returns the savepoint's path.

    PyFlink 2.3's ``JobClient.stop_with_savepoint`` calls a Java signature that no longer exists (the
    method now also takes a ``SavepointFormatType``), so the Java client is called directly.
    """
    if isinstance(client, AttachedJob):
        return client.stop_with_savepoint(target)
    from pyflink.java_gateway import get_gateway

    format_type = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType.DEFAULT
    return str(client._j_job_client.stopWithSavepoint(False, target, format_type).get())


def watch(client: Any, state: dict[str, str], stop: threading.Event, every: float = 1.0) -> int | None:
    """Follow the job's status into ``state["status"]`` until ``stop`` is set (None) or the job ends
    (the runner's exit code: 0 FINISHED, 1 failed for good or its JVM gone).

    A status call that fails while the JVM still answers (a Java exception: an RPC timeout while the
    machine stalls; an HTTP 5xx while the JobManagers elect a leader) says nothing about the job, so it
    is waited out as UNKNOWN: in a JobManager the runner is the application's driver, and a driver that
    exits fails the application, which Flink then records as globally terminal: no JobManager would
    ever run the job again."""
    from py4j.protocol import Py4JNetworkError

    unavailable_since: float | None = None
    while not stop.wait(every):
        try:
            status = job_status(client)
        except Py4JNetworkError as exc:  # the JVM (the mini-cluster, or the JobManager's gateway) is gone
            log_fault(log, Fault.COMPONENT_CRASHED, f"lost the job's JVM: {exc}", level=logging.ERROR)
            return 1
        except Exception as exc:
            if unavailable_since is None:
                unavailable_since = time.monotonic()
                log_fault(log, Fault.JOB_STATUS_UNAVAILABLE, f"the job's status cannot be read; waiting: {exc}")
            status = "UNKNOWN"
        else:
            if unavailable_since is not None:
                waited = time.monotonic() - unavailable_since
                log_event(log, "job.status_available", f"the job's status is readable again after {waited:.0f}s",
                          waited_s=round(waited, 1))  # fmt: skip
                unavailable_since = None
        if status != state["status"]:
            log_event(log, "job.status", f"job is {status}", status=status)
        state["status"] = status
        if status == "FINISHED":  # stopped with a savepoint from outside, e.g. by the operator
            log_event(log, "job.finished", "job FINISHED; the runner ends with it")
            return 0
        if status in GLOBALLY_TERMINAL:
            log_fault(log, Fault.COMPONENT_CRASHED, f"job ended as {status}", level=logging.ERROR)
            return 1
    return None


def run(config_path: str | None, config: ObflowConfig, from_savepoint: str | None = None, local: bool = True) -> int:
    """``obflow job run``: run until SIGTERM/SIGINT, then stop with a savepoint (its path is written to
    ``<checkpoint.savepoint_dir>/LATEST``) and exit 0; exit 1 if the job fails for good.

    Alongside the job: the runner's ``/healthz``, ``/readyz`` (the job is RUNNING) and ``/metrics`` on
    ``output.metrics_port``.
    """
    try:
        client, parallelism = submit(config_path, config, from_savepoint, local)
    except (DatahubException, RequestException) as exc:  # the shards are listed before the job is built
        return refuse_start_without_datahub("job", exc, config.datahub)
    state = {"status": "CREATED"}
    health = HealthServer("job", config.output.metrics_port, lambda: (state["status"] == "RUNNING", state["status"]))
    health.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log_event(
        log, "job.started", f"job {client.get_job_id()} running", parallelism=parallelism, restored_from=from_savepoint
    )
    try:
        ended = watch(client, state, stop)
        if ended is not None:
            return ended
        target = storage_uri(config.checkpoint.savepoint_dir)
        try:
            savepoint = stop_with_savepoint(client, target)
        except Exception as exc:  # e.g. the job is restarting: no savepoint now; the checkpoints remain
            log_fault(
                log,
                Fault.CHECKPOINT_FAILED,
                f"stop with savepoint failed, cancelling; restore from the latest checkpoint: {exc}",
                level=logging.ERROR,
            )
            client.cancel().result()
            return 1
        latest = latest_savepoint_file(config)
        latest.parent.mkdir(parents=True, exist_ok=True)
        latest.write_text(savepoint)
        log_event(log, "job.stopped", f"job stopped with savepoint {savepoint}", savepoint=savepoint)
        return 0
    finally:
        health.stop()


if __name__ == "__main__":  # flink run -py flink_job/job.py [config]; no config: OBFLOW_* environment only
    path = sys.argv[1] if len(sys.argv) > 1 else None
    sys.exit(run(path, load_config(path), local=False))
