"""A stand-in for a JobManager's REST API: MOCK, because no kubelet runs here to start the real
JobManager pod the operator created. It answers the calls the operator makes (job overview,
checkpoints, stop-with-savepoint, cancel) the way Flink 2.3 does (tests/operator/test_flink_rest.py
checks the client against a real cluster). The real Flink side is exercised by the
Flink job tests and, with the lifecycle, against a standalone cluster."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JOB_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


class FakeJobManager:
    def __init__(self, savepoint_dir: str = "file:///data/savepoints") -> None:
        self.state = "RUNNING"
        self.savepoint_dir = savepoint_dir
        self.stop_requests: list[dict[str, Any]] = []
        self.cancel_requests = 0
        self.fail_savepoint = False
        self.parallelism = 2  # of the DataHub-reading vertex; the ticker runs at 1
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

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
                if self.path == "/jobs/overview":
                    self._reply({"jobs": [{"jid": JOB_ID, "name": "obflow", "state": fake.state, "start-time": 1}]})
                elif self.path == f"/jobs/{JOB_ID}":
                    vertices = [
                        {"id": "v1", "name": "Source: ticks", "parallelism": 1, "status": fake.state},
                        {"id": "v2", "name": "DataHub shards", "parallelism": fake.parallelism, "status": fake.state},
                    ]
                    self._reply({"jid": JOB_ID, "name": "obflow", "state": fake.state, "vertices": vertices})
                elif self.path == f"/jobs/{JOB_ID}/checkpoints":
                    latest = {"id": 7, "latest_ack_timestamp": 1_795_000_000_000, "external_path": "file:///c/chk-7"}
                    self._reply({"counts": {"completed": 7, "failed": 0}, "latest": {"completed": latest}})
                elif self.path.startswith(f"/jobs/{JOB_ID}/savepoints/"):
                    if fake.fail_savepoint:
                        failure = {"failure-cause": {"stack-trace": "CheckpointException: Task not running"}}
                        self._reply({"status": {"id": "COMPLETED"}, "operation": failure})
                    else:
                        location = f"{fake.savepoint_dir}/savepoint-a1b2c3-0123456789ab"
                        self._reply({"status": {"id": "COMPLETED"}, "operation": {"location": location}})
                else:
                    self._reply({"errors": ["Not found: " + self.path]}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path == f"/jobs/{JOB_ID}/stop":
                    fake.stop_requests.append(body)
                    if not fake.fail_savepoint:
                        fake.state = "FINISHED"
                    self._reply({"request-id": "trigger-1"}, 202)
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
