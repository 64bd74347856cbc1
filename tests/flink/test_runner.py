"""The job runner's watch over its job: what ends it and what it waits out.

The JobManager's REST API is played by a local HTTP server answering as Flink does (503 during a
leader election, then the job's state): a real JobManager cannot be made to lose its leadership on
cue here. The lost-JVM case uses a client object that raises py4j's own network error, as py4j does
when the gateway's JVM is gone."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from py4j.protocol import Py4JNetworkError

from flink_job.attach import AttachedJob
from flink_job.job import watch

JOB_ID = "058400c635f209abe902a4bc8850c5eb"


class JobManagerStandIn:
    """Answers ``GET /jobs/<id>`` with the next of ``answers``: an HTTP status, or a job state (200);
    the last answer repeats."""

    def __init__(self, answers: list[int | str]) -> None:
        self.answers, self.asked = answers, 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = stand_in.answers[min(stand_in.asked, len(stand_in.answers) - 1)]
                stand_in.asked += 1
                body = json.dumps({"state": answer} if isinstance(answer, str) else {"errors": ["leader?"]})
                self.send_response(200 if isinstance(answer, str) else answer)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def follow(client: AttachedJob) -> tuple[int | None, list[str]]:
    """What ``watch`` ends with, and every status the runner's readiness showed, in order."""
    seen: list[str] = []

    class State(dict[str, str]):
        def __setitem__(self, key: str, value: str) -> None:
            if not seen or seen[-1] != value:
                seen.append(value)
            super().__setitem__(key, value)

    return watch(client, State(status="CREATED"), threading.Event(), every=0.01), seen


def follow_answers(answers: list[int | str]) -> tuple[int | None, list[str]]:
    """:func:`follow` of a job whose JobManager answers ``answers`` (:class:`JobManagerStandIn`)."""
    stand_in = JobManagerStandIn(answers)
    try:
        return follow(AttachedJob(JOB_ID, stand_in.url))
    finally:
        stand_in.close()


def test_a_leader_election_is_waited_out_not_taken_for_a_failed_job(caplog: pytest.LogCaptureFixture) -> None:
    """Four 503s (the JobManagers electing a leader), then RUNNING, then FINISHED (stopped with a
    savepoint by the operator): the runner shows UNKNOWN (not ready) meanwhile, says so once with
    ``job.status_unavailable`` and once ``job.status_available``, and ends with 0, not 1: a runner
    that exits 1 in a JobManager fails the application, and Flink never runs its job again."""
    caplog.set_level(logging.INFO, logger="obflow.flink")
    ended, statuses = follow_answers([503, 503, 503, 503, "RUNNING", "RUNNING", "FINISHED"])
    assert ended == 0
    assert statuses == ["UNKNOWN", "RUNNING", "FINISHED"]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("job.status_unavailable") == 1 and events.count("job.status_available") == 1


def test_a_job_that_failed_for_good_ends_the_runner_with_1() -> None:
    ended, statuses = follow_answers(["RUNNING", "RESTARTING", "FAILED"])
    assert ended == 1
    assert statuses == ["RUNNING", "RESTARTING", "FAILED"]


def test_a_lost_jvm_ends_the_runner_with_1() -> None:
    class GoneJvm(AttachedJob):
        def status(self) -> str:
            raise Py4JNetworkError("An error occurred while trying to connect to the Java server")

    assert follow(GoneJvm(JOB_ID, "http://127.0.0.1:9")) == (1, [])
