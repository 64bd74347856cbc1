"""A small typed client of the Flink JobManager's REST API: what the operator needs to observe a job
and stop it with a savepoint. Every call has a timeout and retries transient failures."""

from __future__ import annotations

import time
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
    """The newest completed checkpoint (``None`` fields when there is none yet)."""

    completed: int = 0
    failed: int = 0
    latest_id: int | None = None
    latest_time_ms: int | None = None
    latest_path: str | None = None


class FlinkRest:
    def __init__(self, base_url: str, timeout: float = 10.0, retries: int = 2, retry_pause: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.retry_pause = retry_pause
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, json=body)
                if response.status_code < 500:
                    response.raise_for_status()
                    return response.json()
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

    def checkpoints(self, job_id: str) -> CheckpointSummary:
        data = self._call("GET", f"/jobs/{job_id}/checkpoints")
        counts = data.get("counts", {})
        latest = (data.get("latest") or {}).get("completed") or {}
        return CheckpointSummary(
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            latest_id=latest.get("id"),
            latest_time_ms=latest.get("latest_ack_timestamp"),
            latest_path=latest.get("external_path"),
        )

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
