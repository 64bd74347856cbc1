"""A stand-in for a JobManager's REST API: MOCK, because no kubelet runs here to start the real
JobManager pod the operator created. It answers the calls the operator makes (job overview and
vertices, checkpoints, the reading stage's metrics, stop-with-savepoint, cancel, the adaptive
scheduler's resource requirements, savepoint disposal) the way Flink 2.3 does
(tests/operator/test_flink_rest.py checks the client against a real cluster). The real Flink side is exercised by the
Flink job tests and, with the lifecycle, against a standalone cluster."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from obflow.job_graph import METRIC_GROUP, POLLER_NAME, TICKS_TABLE, TICKS_TO_READERS

JOB_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
# the real job's vertex names (see the metric ids in test_flink_rest.py's cluster)
VERTICES = {
    "v0": f"Source: {TICKS_TABLE}[1] -> TableToDataStream -> {TICKS_TO_READERS}",
    "v1": f"{POLLER_NAME} -> Extract-Timestamp -> Timestamps/Watermarks -> event time: commit timestamp -> "
    "progress: discard: Writer",
}
POLLER_METRIC = "".join(c if c.isalnum() else "_" for c in POLLER_NAME)  # as Flink names the operator's metrics


class FakeJobManager:
    def __init__(self, savepoint_dir: str = "file:///data/savepoints") -> None:
        self.state = "RUNNING"
        self.savepoint_dir = savepoint_dir
        self.stop_requests: list[dict[str, Any]] = []
        self.cancel_requests = 0
        self.fail_savepoint = False
        self.parallelism = 2  # of the DataHub-reading vertex; the ticker runs at 1
        self.busy_ms_per_second = 100.0  # the reading stage's figures
        self.records_in_per_second = 500.0
        self.lag_ms = 3000.0
        self.rescale_requests: list[dict[str, Any]] = []
        self.in_place_follows = True  # a rescale request changes the parallelism at once
        self.disposed: list[str] = []
        self.savepoints_taken = 0
        self.savepoint_seconds = 0.0  # how long a savepoint stays IN_PROGRESS
        self.overview_error: int | None = None  # the HTTP status /jobs/overview fails with, as in a leader election
        self.restarting_until = 0.0  # monotonic time until which a RUNNING job reports RESTARTING
        self._savepoint_started = 0.0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def metrics(self, wanted: str) -> list[dict[str, Any]]:
        """Subtask metrics of the reading stage aggregated as Flink does (ids only when none are asked)."""
        values = {
            "busyTimeMsPerSecond": self.busy_ms_per_second,
            "backPressuredTimeMsPerSecond": 0.0,
            f"{POLLER_METRIC}.{METRIC_GROUP}.records_in": self.records_in_per_second,
            f"{POLLER_METRIC}.{METRIC_GROUP}.shard.0.lag_ms": self.lag_ms,
            f"{POLLER_METRIC}.{METRIC_GROUP}.shard.1.lag_ms": self.lag_ms / 2,
        }
        if not wanted:
            return [{"id": name} for name in values]
        return [
            {"id": name, "avg": value, "max": value, "sum": value * self.parallelism if "records" in name else value}
            for name, value in values.items()
            if name in wanted.split(",")
        ]

    def job_state(self) -> str:
        restarting = self.state == "RUNNING" and time.monotonic() < self.restarting_until
        return "RESTARTING" if restarting else self.state

    def requirements(self) -> dict[str, Any]:
        return {
            vid: {"parallelism": {"lowerBound": 1, "upperBound": self.parallelism if vid == "v1" else 1}}
            for vid in VERTICES
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/jobs/overview" and fake.overview_error:
                    self._reply({"errors": ["Service temporarily unavailable"]}, fake.overview_error)
                elif url.path == "/jobs/overview":
                    job = {"jid": JOB_ID, "name": "obflow", "state": fake.job_state(), "start-time": 1}
                    self._reply({"jobs": [job]})
                elif url.path == f"/jobs/{JOB_ID}":
                    vertices = [
                        {"id": vid, "name": name, "parallelism": fake.parallelism if vid == "v1" else 1}
                        | {"status": fake.job_state()}
                        for vid, name in VERTICES.items()
                    ]
                    self._reply({"jid": JOB_ID, "name": "obflow", "state": fake.job_state(), "vertices": vertices})
                elif url.path == f"/jobs/{JOB_ID}/checkpoints":
                    latest = {"id": 7, "latest_ack_timestamp": 1_795_000_000_000, "external_path": "file:///c/chk-7"}
                    self._reply({"counts": {"completed": 7, "failed": 0}, "latest": {"completed": latest}})
                elif url.path == f"/jobs/{JOB_ID}/vertices/v1/subtasks/metrics":
                    self._reply(fake.metrics(parse_qs(url.query).get("get", [""])[0]))
                elif url.path.startswith(f"/jobs/{JOB_ID}/vertices/"):
                    self._reply([])
                elif url.path == f"/jobs/{JOB_ID}/resource-requirements":
                    self._reply(fake.requirements())
                elif url.path.startswith(f"/jobs/{JOB_ID}/savepoints/"):
                    if time.monotonic() - fake._savepoint_started < fake.savepoint_seconds:
                        self._reply({"status": {"id": "IN_PROGRESS"}})
                    elif fake.fail_savepoint:
                        failure = {"failure-cause": {"stack-trace": "CheckpointException: Task not running"}}
                        self._reply({"status": {"id": "COMPLETED"}, "operation": failure})
                    else:
                        location = f"{fake.savepoint_dir}/savepoint-a1b2c3-{fake.savepoints_taken:012d}"
                        self._reply({"status": {"id": "COMPLETED"}, "operation": {"location": location}})
                elif url.path.startswith("/savepoint-disposal/"):
                    self._reply({"status": {"id": "COMPLETED"}, "operation": {}})
                else:
                    self._reply({"errors": ["Not found: " + self.path]}, 404)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_POST(self) -> None:
                body = self._body()
                if self.path == f"/jobs/{JOB_ID}/stop":
                    fake.stop_requests.append(body)
                    fake._savepoint_started = time.monotonic()
                    if not fake.fail_savepoint:
                        fake.state = "FINISHED"
                        fake.savepoints_taken += 1
                    self._reply({"request-id": "trigger-1"}, 202)
                elif self.path == "/savepoint-disposal":
                    fake.disposed.append(body["savepoint-path"])
                    self._reply({"request-id": "disposal-1"}, 202)
                else:
                    self._reply({"errors": ["Not found: " + self.path]}, 404)

            def do_PUT(self) -> None:
                body = self._body()
                if self.path == f"/jobs/{JOB_ID}/resource-requirements":
                    fake.rescale_requests.append(body)
                    if fake.in_place_follows:
                        fake.parallelism = body["v1"]["parallelism"]["upperBound"]
                    self._reply({})
                else:
                    self._reply({"errors": ["Not found: " + self.path]}, 404)

            def do_PATCH(self) -> None:
                if self.path == f"/jobs/{JOB_ID}?mode=cancel":
                    fake.cancel_requests += 1
                    fake.state = "CANCELED"
                    self._reply({}, 202)
                else:
                    self._reply({"errors": ["Not found: " + self.path]}, 404)

        return Handler
