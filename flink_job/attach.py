"""Attaching the runner to a job its JobManager already runs.

On a cluster with Kubernetes HA the job runner (this job's ``__main__``, Flink's application) starts in
every JobManager that wins leadership. After a failover the new leader may have recovered the job from
the HA store before the runner submits it; the submission is then a duplicate, and if the runner failed
on it Flink would fail the application and cancel the recovered job — the pipeline would stop for good.
So the runner attaches to the running job instead, through its JobManager's own REST endpoint, and
drives it as it drives a job it submitted: status, stop with a savepoint, cancel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obflow import ports
from obflow.flink_rest import FlinkRest

# the job is over for good; NOT_FOUND: the JobManager no longer knows it (it ended before a failover)
GLOBALLY_TERMINAL = frozenset({"FAILED", "CANCELED", "FINISHED", "NOT_FOUND"})


def duplicate_submission(error: BaseException) -> str | None:
    """The job id of a DuplicateJobSubmissionException anywhere in ``error``'s (Java) causes, else None."""
    java = getattr(error, "java_exception", None)
    while java is not None:
        if java.getClass().getSimpleName() == "DuplicateJobSubmissionException":
            return str(java.getJobID().toHexString())
        cause = java.getCause()
        java = None if cause is None or cause.equals(java) else cause
    return None


def rest_port(conf_dir: str | None = None) -> int:
    """``rest.port`` of this JobManager's (flattened) Flink configuration."""
    conf = Path(conf_dir or os.environ.get("FLINK_CONF_DIR", "/opt/flink/conf")) / "config.yaml"
    if conf.is_file():
        for line in conf.read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "rest.port":
                return int(value.strip().strip("'\""))
    return ports.FLINK_REST


@dataclass
class Done:
    """A finished future, as PyFlink's JobClient methods return them."""

    value: Any

    def result(self) -> Any:
        return self.value


class AttachedJob:
    """The JobClient calls the runner makes, for a job it did not submit, through the Flink REST client.
    No retries inside a call: the runner's watch waits out a JobManager that does not answer."""

    def __init__(self, job_id: str, url: str, timeout: float = 10.0) -> None:
        self.job_id = job_id
        self.rest = FlinkRest(url, timeout=timeout, retries=0)

    def get_job_id(self) -> str:
        return self.job_id

    def status(self) -> str:
        return self.rest.job_state(self.job_id) or "NOT_FOUND"

    def cancel(self) -> Done:
        self.rest.cancel(self.job_id)
        return Done(None)

    def stop_with_savepoint(self, target: str, timeout: float = 600.0) -> str:
        """Stop the job with a savepoint in ``target``; returns the savepoint's path."""
        return self.rest.stop_with_savepoint(self.job_id, target, timeout)
