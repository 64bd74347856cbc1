"""A typed client of the Flink JobManager's REST API: what the operator needs to observe a job, take
savepoints, stop it with one, read per-vertex metrics and rescale it in place (adaptive scheduler).
Every call has a timeout and retries transient failures (connection errors, 5xx)."""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

TRANSIENT = (httpx.TransportError, httpx.HTTPStatusError)


class FlinkRestError(RuntimeError):
    pass


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
    """Per-vertex figures, aggregated over its subtasks, as the autoscaler reads them."""

    busy_ratio: float  # mean busyTimeMsPerSecond / 1000
    backpressured_ratio: float  # mean backPressuredTimeMsPerSecond / 1000
    records_in_per_second: float  # sum of numRecordsInPerSecond


VERTEX_METRICS = ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "numRecordsInPerSecond")


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
                    raise FlinkRestError(f"{method} {self.base_url}{path}: {exc}") from exc
                time.sleep(self.retry_pause)
        raise AssertionError("unreachable")

    def jobs(self) -> list[JobOverview]:
        return [JobOverview.model_validate(j) for j in self._call("GET", "/jobs/overview")["jobs"]]

    def current_job(self) -> JobOverview | None:
        """The newest job that is not finished, else the newest job; None on an empty cluster."""
        jobs = sorted(self.jobs(), key=lambda j: j.start_time, reverse=True)
        live = [j for j in jobs if j.state not in {"FINISHED", "CANCELED", "FAILED"}]
        newest = live or jobs
        return newest[0] if newest else None

    def job(self, job_id: str) -> JobDetails:
        return JobDetails.model_validate(self._call("GET", f"/jobs/{job_id}"))

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

    def vertex_metrics(self, job_id: str, vertex_id: str) -> VertexMetrics:
        names = ",".join(VERTEX_METRICS)
        rows = self._call("GET", f"/jobs/{job_id}/vertices/{vertex_id}/subtasks/metrics?get={names}&agg=avg,sum")
        values = {row["id"]: row for row in rows}

        def agg(name: str, kind: str) -> float:
            value = values.get(name, {}).get(kind)
            return 0.0 if value is None or math.isnan(value) else float(value)  # NaN before the first reading

        return VertexMetrics(
            busy_ratio=agg("busyTimeMsPerSecond", "avg") / 1000,
            backpressured_ratio=agg("backPressuredTimeMsPerSecond", "avg") / 1000,
            records_in_per_second=agg("numRecordsInPerSecond", "sum"),
        )

    def cancel(self, job_id: str) -> None:
        """Cancel the job; with RETAIN_ON_CANCELLATION its retained checkpoints stay restorable."""
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")

    def trigger_savepoint(self, job_id: str, target_directory: str, timeout: float) -> str:
        """Take a savepoint of the running job (it keeps running); returns its location."""
        body = {"target-directory": target_directory, "cancel-job": False}
        trigger = self._call("POST", f"/jobs/{job_id}/savepoints", body)
        return self._await_savepoint(job_id, trigger["request-id"], timeout)

    def resource_requirements(self, job_id: str) -> dict[str, dict[str, int]]:
        """Adaptive scheduler: each vertex's parallelism bounds, ``{vertex: {lowerBound, upperBound}}``."""
        data = self._call("GET", f"/jobs/{job_id}/resource-requirements")
        return {vertex: dict(req["parallelism"]) for vertex, req in data.items()}

    def rescale_in_place(self, job_id: str, parallelism: int, pinned: Collection[str] = ()) -> None:
        """Adaptive scheduler: run every vertex at ``parallelism`` in place, except the ``pinned`` vertex
        ids, which keep their bounds (e.g. a source that must run once)."""
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

    def _await_savepoint(self, job_id: str, trigger_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger_id}")
            if result["status"]["id"] == "COMPLETED":
                operation = result.get("operation", {})
                if "location" in operation:
                    return str(operation["location"])
                cause = operation.get("failure-cause", {}).get("stack-trace", "unknown cause").splitlines()[0]
                raise FlinkRestError(f"savepoint of job {job_id} failed: {cause}")
            time.sleep(1.0)
        raise FlinkRestError(f"savepoint of job {job_id} not complete after {timeout:.0f}s")
