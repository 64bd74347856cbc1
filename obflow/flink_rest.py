"""A typed client of the Flink JobManager's REST API: what the operator needs to observe a job, take
savepoints, stop it with one, read per-vertex metrics and rescale it in place (adaptive scheduler), and
what the job runner needs of a job it did not submit (flink_job.attach). Every call has a timeout and
retries transient failures (connection errors, 5xx)."""

from __future__ import annotations

import math
import re
import time
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from obflow.job_graph import METRIC_GROUP, is_reading_stage, is_single_subtask

TRANSIENT = (httpx.TransportError, httpx.HTTPStatusError)
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED"})


class FlinkRestError(RuntimeError):
    def __init__(self, message: str, reachable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.reachable = reachable
        """False when nothing accepted the connection (refused, unknown host): no JobManager is there,
        as opposed to one that answered with an error or too slowly."""
        self.status = status
        """The HTTP status of an error answer (None: no answer)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class JobOverview(_Model):
    jid: str
    name: str
    state: str
    start_time: int = Field(alias="start-time")


class CheckpointSummary(_Model):
    """Checkpoint counts and the newest completed checkpoint (``None`` fields when there is none yet)."""

    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    latest_id: int | None = None
    latest_time_ms: int | None = None
    latest_path: str | None = None
    latest_duration_ms: int | None = None


class Vertex(_Model):
    id: str
    name: str
    parallelism: int
    status: str


class JobDetails(_Model):
    jid: str
    name: str
    state: str
    vertices: list[Vertex]

    def all_running(self, parallelism: int | None = None) -> bool:
        """Every vertex RUNNING (and, given ``parallelism``, those not pinned to 1 running at it)."""
        running = self.state == "RUNNING" and all(v.status == "RUNNING" for v in self.vertices)
        if parallelism is None:
            return running
        return (
            running
            and all(v.parallelism in {1, parallelism} for v in self.vertices)
            and any(v.parallelism == parallelism for v in self.vertices)
        )


class VertexMetrics(_Model):
    """The reading stage's figures, aggregated over its subtasks, as the autoscaler reads them."""

    parallelism: int
    busy_ratio: float  # mean busyTimeMsPerSecond / 1000
    backpressured_ratio: float  # mean backPressuredTimeMsPerSecond / 1000
    records_in_per_second: float  # sum of the records read from DataHub per second
    lag_seconds: float  # the newest record read on the furthest-behind shard, behind its commit


BUSY, BACKPRESSURED = "busyTimeMsPerSecond", "backPressuredTimeMsPerSecond"
RECORDS_IN = f".{METRIC_GROUP}.records_in"  # the job's meter of records read from DataHub
SHARD_LAG = re.compile(rf"\.{METRIC_GROUP}\.shard\.[^.]+\.lag_ms$")


class FlinkRest:
    def __init__(self, base_url: str, timeout: float = 10.0, retries: int = 2, retry_pause: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.retry_pause = retry_pause
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FlinkRest:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, json=body)
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json() if response.content else {}
                response.raise_for_status()
            except TRANSIENT as exc:
                client_error = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500
                if client_error or attempt == self.retries:
                    unreachable = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                    status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
                    message = f"{method} {self.base_url}{path}: {exc}"
                    raise FlinkRestError(message, not unreachable, status) from exc
                time.sleep(self.retry_pause)
        raise AssertionError("unreachable")

    def jobs(self) -> list[JobOverview]:
        return [JobOverview.model_validate(j) for j in self._call("GET", "/jobs/overview")["jobs"]]

    def current_job(self) -> JobOverview | None:
        """The newest job that is not finished, else the newest job; None on an empty cluster."""
        jobs = sorted(self.jobs(), key=lambda j: j.start_time, reverse=True)
        live = [j for j in jobs if j.state not in TERMINAL_STATES]
        newest = live or jobs
        return newest[0] if newest else None

    def job(self, job_id: str) -> JobDetails:
        return JobDetails.model_validate(self._call("GET", f"/jobs/{job_id}"))

    def job_state(self, job_id: str) -> str | None:
        """The job's state alone; None when this JobManager does not know the job (404)."""
        try:
            return str(self._call("GET", f"/jobs/{job_id}")["state"])
        except FlinkRestError as exc:
            if exc.status == 404:
                return None
            raise

    def exceptions(self, job_id: str, limit: int = 5) -> list[str]:
        """The newest root exceptions of the job, first line each."""
        data = self._call("GET", f"/jobs/{job_id}/exceptions?maxExceptions={limit}")
        history = (data.get("exceptionHistory") or {}).get("entries") or []
        return [str(e.get("stacktrace") or e.get("exceptionName", "")).splitlines()[0] for e in history][:limit]

    def checkpoints(self, job_id: str) -> CheckpointSummary:
        data = self._call("GET", f"/jobs/{job_id}/checkpoints")
        counts = data.get("counts", {})
        latest = (data.get("latest") or {}).get("completed") or {}
        return CheckpointSummary(
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            in_progress=counts.get("in_progress", 0),
            latest_id=latest.get("id"),
            latest_time_ms=latest.get("latest_ack_timestamp"),
            latest_path=latest.get("external_path"),
            latest_duration_ms=latest.get("end_to_end_duration"),
        )

    def reading_stage_metrics(self, job: JobDetails) -> VertexMetrics | None:
        """Busy and back-pressured time, read rate and lag of the job's DataHub-reading vertex; None
        until Flink has a first reading of them (it fetches metrics from the TaskManagers lazily)."""
        vertex = next((v for v in job.vertices if is_reading_stage(v.name)), None)
        if vertex is None:
            return None
        base = f"/jobs/{job.jid}/vertices/{vertex.id}/subtasks/metrics"
        ids = [row["id"] for row in self._call("GET", base)]
        wanted = [i for i in ids if i in {BUSY, BACKPRESSURED} or i.endswith(RECORDS_IN) or SHARD_LAG.search(i)]
        if BUSY not in wanted:
            return None
        rows = {row["id"]: row for row in self._call("GET", f"{base}?get={','.join(wanted)}&agg=avg,sum,max")}

        def agg(name: str, kind: str) -> float | None:
            value = rows.get(name, {}).get(kind)
            return None if value is None or value == "NaN" or math.isnan(float(value)) else float(value)

        busy = agg(BUSY, "avg")
        if busy is None:  # NaN until the first measurement
            return None
        lags = [agg(i, "max") for i in wanted if SHARD_LAG.search(i)]
        return VertexMetrics(
            parallelism=vertex.parallelism,
            busy_ratio=busy / 1000,
            backpressured_ratio=(agg(BACKPRESSURED, "avg") or 0.0) / 1000,
            records_in_per_second=sum(agg(i, "sum") or 0.0 for i in wanted if i.endswith(RECORDS_IN)),
            lag_seconds=max((lag for lag in lags if lag is not None), default=0.0) / 1000,
        )

    def cancel(self, job_id: str) -> None:
        """Cancel the job; with RETAIN_ON_CANCELLATION its retained checkpoints stay restorable."""
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")

    def cancel_and_wait(self, job_id: str, timeout: float) -> str | None:
        """Cancel the job and wait until it has ended; returns its newest retained checkpoint, read until
        the end because checkpoints still complete while the tasks are being cancelled (the one seen
        before cancelling may be subsumed by then)."""
        latest = self.checkpoints(job_id).latest_path
        self.cancel(job_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                latest = self.checkpoints(job_id).latest_path or latest
                if self.job(job_id).state in TERMINAL_STATES:
                    break
            except FlinkRestError:  # an application-mode JobManager ends with its job
                break
            time.sleep(0.5)
        return latest

    def trigger_savepoint(self, job_id: str, target_directory: str, timeout: float) -> str:
        """Take a savepoint of the running job (it keeps running); returns its location."""
        body = {"target-directory": target_directory, "cancel-job": False}
        trigger = self._call("POST", f"/jobs/{job_id}/savepoints", body)
        return self._await_savepoint(job_id, trigger["request-id"], timeout)

    def resource_requirements(self, job_id: str) -> dict[str, dict[str, int]]:
        """Adaptive scheduler: each vertex's parallelism bounds, ``{vertex: {lowerBound, upperBound}}``."""
        data = self._call("GET", f"/jobs/{job_id}/resource-requirements")
        return {vertex: dict(req["parallelism"]) for vertex, req in data.items()}

    def rescale_in_place(self, job_id: str, parallelism: int) -> None:
        """Adaptive scheduler: run every vertex at ``parallelism`` in place, except those that must run
        one subtask (the job's ticker), which keep their bounds."""
        pinned = {v.id for v in self.job(job_id).vertices if is_single_subtask(v.name)}
        requirements = self.resource_requirements(job_id)
        body = {
            vertex: {"parallelism": bounds if vertex in pinned else {"lowerBound": 1, "upperBound": parallelism}}
            for vertex, bounds in requirements.items()
        }
        self._call("PUT", f"/jobs/{job_id}/resource-requirements", body)

    def stop_with_savepoint(self, job_id: str, target_directory: str, timeout: float) -> str:
        """Stop the job with a savepoint; returns its location. Raises :class:`FlinkRestError` when the
        savepoint fails or takes longer than ``timeout`` seconds."""
        trigger = self._call("POST", f"/jobs/{job_id}/stop", {"targetDirectory": target_directory, "drain": False})
        return self._await_savepoint(job_id, trigger["request-id"], timeout)

    def dispose_savepoint(self, path: str, timeout: float) -> None:
        """Delete a savepoint's files through the JobManager (it knows the file system and its
        credentials); raises :class:`FlinkRestError` when Flink reports a failure."""
        trigger = self._call("POST", "/savepoint-disposal", {"savepoint-path": path})
        self._await(f"/savepoint-disposal/{trigger['request-id']}", f"disposal of {path}", timeout)

    def _await_savepoint(self, job_id: str, trigger_id: str, timeout: float) -> str:
        operation = self._await(f"/jobs/{job_id}/savepoints/{trigger_id}", f"savepoint of job {job_id}", timeout)
        if "location" not in operation:
            raise FlinkRestError(f"savepoint of job {job_id} failed: no location in {operation}")
        return str(operation["location"])

    def _await(self, path: str, what: str, timeout: float) -> dict[str, Any]:
        """Poll an asynchronous operation until it completes; its ``operation``, or raises with Flink's cause."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._call("GET", path)
            if result["status"]["id"] == "COMPLETED":
                operation: dict[str, Any] = result.get("operation") or {}
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "unknown cause").splitlines()[0]
                    raise FlinkRestError(f"{what} failed: {cause}")
                return operation
            time.sleep(1.0)
        raise FlinkRestError(f"{what} not complete after {timeout:.0f}s")
